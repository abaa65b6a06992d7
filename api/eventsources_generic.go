package api

// GenericEventSource is Argo's GenericEventSource: a gRPC server implementing Argo's
// generic.Eventing service streams the events.
type GenericEventSource struct {
	// URL is the gRPC target of the server (host:port, dns:///host:port).
	URL string `json:"url"`
	// Config is sent to the server as the EventSource message's config.
	Config string `json:"config"`
	// Insecure connects without TLS.
	Insecure bool              `json:"insecure,omitempty"`
	JSONBody bool              `json:"jsonBody,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// AuthSecret holds a bearer token, sent as the authorization metadata of the stream.
	AuthSecret *SecretKeySelector `json:"authSecret,omitempty"`
	Filter     *EventSourceFilter `json:"filter,omitempty"`
}
