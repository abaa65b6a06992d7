module github.com/kevents/kevents/testcontainers

go 1.26
