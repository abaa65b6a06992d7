package api

// SNSEventSource is Argo's SNSEventSource: a webhook endpoint subscribed to an AWS SNS topic.
type SNSEventSource struct {
	// Webhook is where SNS delivers; its url plus endpoint is the subscription's endpoint.
	Webhook   *WebhookContext    `json:"webhook,omitempty"`
	TopicArn  string             `json:"topicArn"`
	AccessKey *SecretKeySelector `json:"accessKey,omitempty"`
	SecretKey *SecretKeySelector `json:"secretKey,omitempty"`
	Region    string             `json:"region"`
	RoleARN   string             `json:"roleARN,omitempty"`
	Metadata  map[string]string  `json:"metadata,omitempty"`
	// ValidateSignature checks each message's SNS signature against the certificate at its
	// SigningCertURL.
	ValidateSignature bool               `json:"validateSignature,omitempty"`
	Filter            *EventSourceFilter `json:"filter,omitempty"`
	// Endpoint is the SNS API's URL instead of AWS's (a local SNS, a VPC endpoint).
	Endpoint string `json:"endpoint,omitempty"`
}
