package api

// AMQPEventSource consumes a RabbitMQ (AMQP 0-9-1) queue bound to an exchange, as Argo's
// AMQPEventSource: the exchange and the queue are declared, the queue bound with routingKey,
// and its messages consumed.
type AMQPEventSource struct {
	// URL is amqp://user:password@host:port/vhost (amqps:// for TLS); exactly one of URL and
	// URLSecret is set.
	URL          string `json:"url,omitempty"`
	ExchangeName string `json:"exchangeName"`
	// ExchangeType is direct, fanout, topic, headers, or a plugin's type (x-...).
	ExchangeType      string                     `json:"exchangeType"`
	RoutingKey        string                     `json:"routingKey"`
	ConnectionBackoff *Backoff                   `json:"connectionBackoff,omitempty"`
	JSONBody          bool                       `json:"jsonBody,omitempty"`
	TLS               *TLSConfig                 `json:"tls,omitempty"`
	Metadata          map[string]string          `json:"metadata,omitempty"`
	ExchangeDeclare   *AMQPExchangeDeclareConfig `json:"exchangeDeclare,omitempty"`
	QueueDeclare      *AMQPQueueDeclareConfig    `json:"queueDeclare,omitempty"`
	QueueBind         *AMQPQueueBindConfig       `json:"queueBind,omitempty"`
	Consume           *AMQPConsumeConfig         `json:"consume,omitempty"`
	Auth              *BasicAuth                 `json:"auth,omitempty"`
	// URLSecret holds the URL in a Secret (it may carry a password).
	URLSecret *SecretKeySelector `json:"urlSecret,omitempty"`
	Filter    *EventSourceFilter `json:"filter,omitempty"`
}

// AMQPExchangeDeclareConfig is how the exchange is declared. Argo's default when the block is
// absent: durable, not auto-deleted, not internal, waiting for the server.
type AMQPExchangeDeclareConfig struct {
	Durable    bool `json:"durable,omitempty"`
	AutoDelete bool `json:"autoDelete,omitempty"`
	Internal   bool `json:"internal,omitempty"`
	NoWait     bool `json:"noWait,omitempty"`
}

// AMQPQueueDeclareConfig is how the queue is declared. Argo's default when the block is absent:
// a server-named, exclusive, non-durable queue, one per connection.
type AMQPQueueDeclareConfig struct {
	// Name is the queue's name; empty lets the server name it.
	Name       string `json:"name,omitempty"`
	Durable    bool   `json:"durable,omitempty"`
	AutoDelete bool   `json:"autoDelete,omitempty"`
	Exclusive  bool   `json:"exclusive,omitempty"`
	NoWait     bool   `json:"noWait,omitempty"`
	// Arguments are the queue's x-arguments as a YAML mapping in a string, such as
	// "x-queue-type: quorum".
	Arguments string `json:"arguments,omitempty"`
}

// AMQPQueueBindConfig is how the queue is bound to the exchange.
type AMQPQueueBindConfig struct {
	NoWait bool `json:"noWait,omitempty"`
}

// AMQPConsumeConfig is how the queue is consumed. Argo's default when the block is absent:
// autoAck true; kevents always acknowledges after Kafka and ignores autoAck.
type AMQPConsumeConfig struct {
	ConsumerTag string `json:"consumerTag,omitempty"`
	AutoAck     bool   `json:"autoAck,omitempty"`
	Exclusive   bool   `json:"exclusive,omitempty"`
	NoLocal     bool   `json:"noLocal,omitempty"`
	NoWait      bool   `json:"noWait,omitempty"`
}
