"""The model host: a Jupyter server extension that shares models over websockets."""
