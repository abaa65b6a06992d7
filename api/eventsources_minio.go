package api

// S3Artifact is Argo's S3Artifact as the minio event source reads it: the MinIO server, the
// bucket whose notifications to listen to, and the credentials.
type S3Artifact struct {
	// Endpoint is host:port of the MinIO server, without a scheme (as minio-go takes it).
	Endpoint string    `json:"endpoint"`
	Bucket   *S3Bucket `json:"bucket"`
	// Region is the bucket's region; Argo ignores it for this source, kevents passes it to the
	// client (which then skips looking the bucket's location up).
	Region string `json:"region,omitempty"`
	// Insecure connects over plain HTTP instead of HTTPS.
	Insecure  bool               `json:"insecure,omitempty"`
	AccessKey *SecretKeySelector `json:"accessKey"`
	SecretKey *SecretKeySelector `json:"secretKey"`
	// Events are MinIO's event names (s3:ObjectCreated:*, s3:ObjectRemoved:Delete, ...).
	Events   []string          `json:"events,omitempty"`
	Filter   *S3Filter         `json:"filter,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// CACertificate is a PEM CA that verifies the server's certificate, instead of the system's.
	CACertificate *SecretKeySelector `json:"caCertificate,omitempty"`
}

// S3Bucket names a bucket. Key is part of Argo's type (artifacts use it); the minio event source
// ignores it, as Argo's does.
type S3Bucket struct {
	Key  string `json:"key,omitempty"`
	Name string `json:"name"`
}

// S3Filter limits notifications to object keys with a prefix and/or a suffix.
type S3Filter struct {
	Prefix string `json:"prefix"`
	Suffix string `json:"suffix"`
}
