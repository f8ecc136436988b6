"""The notebook front end: magics (`%%trace`, `%nnsight`), widgets (`notebook.widgets`), inline renderers."""
