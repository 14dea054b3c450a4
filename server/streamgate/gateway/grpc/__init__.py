"""The gRPC door (grpc.aio, HTTP/2): the server and its limits, the interceptors every
streamgate.v1 call goes through, the thin servicers over the pipeline, the mapping of errors to
statuses with google.rpc details, grpc.health.v1 and reflection."""
