"""The dashboard and REST API behind `tapetum serve` (see tapetum.web.app)."""
