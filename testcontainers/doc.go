// Package testcontainers will run kevents' end-to-end suite against a real Kafka in a
// container; see README.md. It holds no tests yet.
package testcontainers
