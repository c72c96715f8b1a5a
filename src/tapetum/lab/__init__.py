"""The scenario lab: real attack tools against real services in isolated network namespaces,
recorded as labelled captures (`tapetum lab`). See docs/lab.md."""
