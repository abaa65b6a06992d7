//go:build tools

// Package minio pins the MinIO server the minio source's tests run; see the Makefile's minio
// target.
package minio

import _ "github.com/minio/minio"
