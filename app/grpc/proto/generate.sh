#!/usr/bin/env bash
# Regenerates open_inference_grpc_pb2.py/.pyi from the vendored open_inference_grpc.proto.
# Needs grpcio-tools (its bundled protoc): PYTHON=/path/to/python-with-grpcio-tools ./generate.sh
# The messages are registered in a private descriptor pool, not the process-wide default one:
# tritonclient (and other Open Inference Protocol clients) register the same `inference.*`
# names there, and a second registration of a name fails.
set -euo pipefail
cd "$(dirname "$0")"
"${PYTHON:-python3}" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. open_inference_grpc.proto
sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' \
  open_inference_grpc_pb2.py
grep -q '_descriptor_pool.DescriptorPool().AddSerializedFile(' open_inference_grpc_pb2.py
