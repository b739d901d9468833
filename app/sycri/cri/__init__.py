"""gRPC adapters for the CRI RuntimeService and ImageService: proto in, domain call, proto out."""
