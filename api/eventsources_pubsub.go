package api

// PubSubEventSource is Argo's PubSubEventSource: a Google Cloud Pub/Sub subscription, created
// (with its topic) when it does not exist. The JSON names and their order are Argo's: the
// default subscription ID is a hash of this spec as Argo encodes it.
type PubSubEventSource struct {
	// ProjectID is the project of the subscription; empty means detected (Argo asks the GCE
	// metadata server).
	ProjectID string `json:"projectID,omitempty"`
	// TopicProjectID is the project of the topic; ProjectID when empty.
	TopicProjectID string `json:"topicProjectID,omitempty"`
	// Topic is the topic the subscription reads; required to create a missing subscription, and
	// checked against an existing one.
	Topic string `json:"topic,omitempty"`
	// SubscriptionID is the subscription's ID; empty means "<event name>-<hash of the spec>",
	// as Argo derives it.
	SubscriptionID string `json:"subscriptionID,omitempty"`
	// CredentialSecret holds Google credentials JSON; without it the default credentials.
	CredentialSecret           *SecretKeySelector `json:"credentialSecret,omitempty"`
	DeleteSubscriptionOnFinish bool               `json:"deleteSubscriptionOnFinish,omitempty"`
	JSONBody                   bool               `json:"jsonBody,omitempty"`
	Metadata                   map[string]string  `json:"metadata,omitempty"`
	Filter                     *EventSourceFilter `json:"filter,omitempty"`
}
