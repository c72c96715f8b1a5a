"""Kitsune on packets: AfterImage damped statistics (`stats`), our batched KitNET (`kitnet`) and
the original per-sample KitNET as a reference (`reference`, needs scipy)."""
