"""The gRPC gateway: servicers and the request pipeline stages."""
