"""The Open Inference Protocol's gRPC messages (vendored .proto and its generated code)."""
