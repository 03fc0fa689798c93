//go:build tools

// Package tools pins the versions of the code generators and command-line tools the
// project builds with. They live in their own module so their dependencies stay out
// of the product's go.mod; `make tools` installs them into .tmp/bin.
package tools

import (
	_ "github.com/bufbuild/buf/cmd/buf"
	_ "github.com/fullstorydev/grpcurl/cmd/grpcurl"
	_ "github.com/grpc-ecosystem/grpc-health-probe"
	_ "github.com/nats-io/nats-server/v2"
	_ "google.golang.org/grpc/cmd/protoc-gen-go-grpc"
	_ "google.golang.org/protobuf/cmd/protoc-gen-go"
)
