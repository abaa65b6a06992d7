// Package api holds the EventSource and Sensor definitions kevents reads: Argo Events' YAML
// (apiVersion argoproj.io/v1alpha1), field for field, loaded strictly so that an unknown or
// misplaced field is an error rather than silently ignored.
//
// Parts of Argo's schema that kevents does not run yet are typed as Opaque: they load, and the
// runtime registries (source, trigger) refuse them with ErrNotSupported.
package api

import "encoding/json"

// Opaque is a part of a definition kevents accepts without reading it (the pod template of a
// deployment, the body of a source or trigger type that is not supported yet).
type Opaque = json.RawMessage

// Kinds and API versions kevents reads.
const (
	ArgoAPIVersion    = "argoproj.io/v1alpha1"
	KeventsAPIVersion = "kevents.io/v1alpha1"
	KindEventSource   = "EventSource"
	KindSensor        = "Sensor"
)

// ObjectMeta is the part of Kubernetes' object metadata a definition may carry.
type ObjectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	GenerateName      string            `json:"generateName,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp Opaque            `json:"creationTimestamp,omitempty"`
	Finalizers        []string          `json:"finalizers,omitempty"`
	OwnerReferences   Opaque            `json:"ownerReferences,omitempty"`
	ManagedFields     Opaque            `json:"managedFields,omitempty"`
	// Set by the API server on objects being deleted; definitions read from a cluster carry them.
	DeletionTimestamp          Opaque `json:"deletionTimestamp,omitempty"`
	DeletionGracePeriodSeconds *int64 `json:"deletionGracePeriodSeconds,omitempty"`
}

// SecretKeySelector names one key of a Kubernetes Secret. Outside a cluster kevents resolves it
// from a file or the environment (see source.Secrets).
type SecretKeySelector struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Optional *bool  `json:"optional,omitempty"`
}

// ConfigMapKeySelector names one key of a Kubernetes ConfigMap.
type ConfigMapKeySelector = SecretKeySelector

// EventSource is Argo's EventSource: named events of one or more source types.
type EventSource struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       EventSourceSpec `json:"spec"`
	Status     Opaque          `json:"status,omitempty"`
}

// EventSourceSpec lists events per source type. Each map is keyed by event name.
type EventSourceSpec struct {
	EventBusName string `json:"eventBusName,omitempty"`
	Template     Opaque `json:"template,omitempty"`
	Service      Opaque `json:"service,omitempty"`
	Replicas     *int32 `json:"replicas,omitempty"`

	Webhook map[string]WebhookEventSource `json:"webhook,omitempty"`

	Minio             map[string]S3Artifact                 `json:"minio,omitempty"`
	Calendar          map[string]CalendarEventSource        `json:"calendar,omitempty"`
	File              map[string]FileEventSource            `json:"file,omitempty"`
	Resource          map[string]ResourceEventSource        `json:"resource,omitempty"`
	AMQP              map[string]AMQPEventSource            `json:"amqp,omitempty"`
	Kafka             map[string]KafkaEventSource           `json:"kafka,omitempty"`
	MQTT              map[string]MQTTEventSource            `json:"mqtt,omitempty"`
	NATS              map[string]NATSEventsSource           `json:"nats,omitempty"`
	SNS               map[string]SNSEventSource             `json:"sns,omitempty"`
	SQS               map[string]SQSEventSource             `json:"sqs,omitempty"`
	PubSub            map[string]PubSubEventSource          `json:"pubSub,omitempty"`
	Github            map[string]GithubEventSource          `json:"github,omitempty"`
	Gitlab            map[string]GitlabEventSource          `json:"gitlab,omitempty"`
	HDFS              map[string]Opaque                     `json:"hdfs,omitempty"`
	Slack             map[string]SlackEventSource           `json:"slack,omitempty"`
	StorageGrid       map[string]Opaque                     `json:"storageGrid,omitempty"`
	AzureEventsHub    map[string]Opaque                     `json:"azureEventsHub,omitempty"`
	Stripe            map[string]StripeEventSource          `json:"stripe,omitempty"`
	Emitter           map[string]Opaque                     `json:"emitter,omitempty"`
	Redis             map[string]RedisEventSource           `json:"redis,omitempty"`
	NSQ               map[string]Opaque                     `json:"nsq,omitempty"`
	Pulsar            map[string]Opaque                     `json:"pulsar,omitempty"`
	Generic           map[string]GenericEventSource         `json:"generic,omitempty"`
	BitbucketServer   map[string]BitbucketServerEventSource `json:"bitbucketserver,omitempty"`
	Bitbucket         map[string]BitbucketEventSource       `json:"bitbucket,omitempty"`
	RedisStream       map[string]RedisStreamEventSource     `json:"redisStream,omitempty"`
	AzureServiceBus   map[string]Opaque                     `json:"azureServiceBus,omitempty"`
	AzureQueueStorage map[string]Opaque                     `json:"azureQueueStorage,omitempty"`
	SFTP              map[string]Opaque                     `json:"sftp,omitempty"`
	Gerrit            map[string]Opaque                     `json:"gerrit,omitempty"`
	MNS               map[string]Opaque                     `json:"mns,omitempty"`
}

// WebhookEventSource is Argo's webhook event: an HTTP endpoint that turns requests into events.
type WebhookEventSource struct {
	Endpoint         string             `json:"endpoint"`
	Method           string             `json:"method"`
	Port             string             `json:"port"`
	URL              string             `json:"url,omitempty"`
	ServerCertSecret *SecretKeySelector `json:"serverCertSecret,omitempty"`
	ServerKeySecret  *SecretKeySelector `json:"serverKeySecret,omitempty"`
	Metadata         map[string]string  `json:"metadata,omitempty"`
	AuthSecret       *SecretKeySelector `json:"authSecret,omitempty"`
	MaxPayloadSize   *int64             `json:"maxPayloadSize,omitempty"`
	Filter           *EventSourceFilter `json:"filter,omitempty"`
}

// EventSourceFilter is Argo's expression filter on an event source.
type EventSourceFilter struct {
	Expression string `json:"expression,omitempty"`
}

// Sensor is Argo's Sensor: dependencies on events and the triggers they fire.
type Sensor struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       SensorSpec `json:"spec"`
	Status     Opaque     `json:"status,omitempty"`
}

// SensorSpec is the body of a Sensor.
type SensorSpec struct {
	Dependencies         []EventDependency `json:"dependencies"`
	Triggers             []Trigger         `json:"triggers"`
	Template             Opaque            `json:"template,omitempty"`
	ErrorOnFailedRound   bool              `json:"errorOnFailedRound,omitempty"`
	EventBusName         string            `json:"eventBusName,omitempty"`
	Replicas             *int32            `json:"replicas,omitempty"`
	RevisionHistoryLimit *int32            `json:"revisionHistoryLimit,omitempty"`
	LoggingFields        map[string]string `json:"loggingFields,omitempty"`
}

// EventDependency is one event a sensor waits for.
type EventDependency struct {
	Name                   string                      `json:"name"`
	EventSourceName        string                      `json:"eventSourceName"`
	EventName              string                      `json:"eventName"`
	Filters                *EventDependencyFilter      `json:"filters,omitempty"`
	Transform              *EventDependencyTransformer `json:"transform,omitempty"`
	FiltersLogicalOperator string                      `json:"filtersLogicalOperator,omitempty"`
}

// EventDependencyTransformer rewrites an event before its filters run.
type EventDependencyTransformer struct {
	JQ     string `json:"jq,omitempty"`
	Script string `json:"script,omitempty"`
}

// EventDependencyFilter holds the filters of a dependency.
type EventDependencyFilter struct {
	Time                *TimeFilter   `json:"time,omitempty"`
	Context             *EventContext `json:"context,omitempty"`
	Data                []DataFilter  `json:"data,omitempty"`
	Exprs               []ExprFilter  `json:"exprs,omitempty"`
	DataLogicalOperator string        `json:"dataLogicalOperator,omitempty"`
	ExprLogicalOperator string        `json:"exprLogicalOperator,omitempty"`
	Script              string        `json:"script,omitempty"`
}

// ExprFilter is Argo's expression filter.
type ExprFilter struct {
	Expr   string         `json:"expr"`
	Fields []PayloadField `json:"fields"`
}

// PayloadField maps a path in the event data to a name an expression uses.
type PayloadField struct {
	Path string `json:"path"`
	Name string `json:"name"`
}

// TimeFilter passes events inside a daily time window.
type TimeFilter struct {
	Start    string `json:"start"`
	Stop     string `json:"stop"`
	Timezone string `json:"timezone,omitempty"`
}

// DataFilter compares a value in the event data.
type DataFilter struct {
	Path       string   `json:"path"`
	Type       string   `json:"type"`
	Value      []string `json:"value"`
	Comparator string   `json:"comparator,omitempty"`
	Template   string   `json:"template,omitempty"`
}

// EventContext is a CloudEvent's context as Argo names it; filters compare against it.
type EventContext struct {
	ID              string `json:"id,omitempty"`
	Source          string `json:"source,omitempty"`
	SpecVersion     string `json:"specversion,omitempty"`
	Type            string `json:"type,omitempty"`
	DataContentType string `json:"datacontenttype,omitempty"`
	Subject         string `json:"subject,omitempty"`
	Time            string `json:"time,omitempty"`
}

// Trigger is what a sensor does when its condition holds.
type Trigger struct {
	Template      *TriggerTemplate   `json:"template,omitempty"`
	Parameters    []TriggerParameter `json:"parameters,omitempty"`
	Policy        *TriggerPolicy     `json:"policy,omitempty"`
	RetryStrategy *Backoff           `json:"retryStrategy,omitempty"`
	RateLimit     *RateLimit         `json:"rateLimit,omitempty"`
	AtLeastOnce   bool               `json:"atLeastOnce,omitempty"`
	DlqTrigger    *Trigger           `json:"dlqTrigger,omitempty"`
	// Kevents holds kevents' extensions to Argo's trigger; Argo has no such field.
	Kevents *TriggerExtensions `json:"kevents,omitempty"`
}

// TriggerExtensions are what kevents adds to a trigger.
type TriggerExtensions struct {
	Correlation *Correlation `json:"correlation,omitempty"`
	// Ordered runs the trigger's commands one after another, in the order the sensor emitted
	// them, on one executor member at a time. Without it (and without atLeastOnce, a rateLimit
	// or executor state such as a Slack thread; see trigger.Ordered) a trigger's commands spread
	// over the commands partitions and run concurrently, as an Argo sensor on a NATS or
	// JetStream bus runs each firing in a goroutine of its own.
	Ordered bool `json:"ordered,omitempty"`
}

// Correlation makes a trigger's condition hold per correlation value instead of once for all
// events: "build succeeded and tests passed for the same commit". Each dependency of the
// condition names where its events carry the value; events whose values are equal join.
type Correlation struct {
	// Keys maps every dependency of the trigger's condition to a path (gjson syntax, as a data
	// filter's path) in its event data.
	Keys map[string]string `json:"keys"`
	// Window, a Go duration such as "30m", bounds how long a correlation value waits for the
	// rest of its condition after its first event; then its events are dropped. Empty: no limit.
	Window string `json:"window,omitempty"`
}

// Backoff is Argo's retry strategy.
type Backoff struct {
	Duration Opaque `json:"duration,omitempty"`
	Factor   Opaque `json:"factor,omitempty"`
	Jitter   Opaque `json:"jitter,omitempty"`
	Steps    int32  `json:"steps,omitempty"`
}

// RateLimit caps how often a trigger runs.
type RateLimit struct {
	Unit            string `json:"unit,omitempty"`
	RequestsPerUnit int32  `json:"requestsPerUnit,omitempty"`
}

// TriggerPolicy decides whether a trigger's outcome counts as success.
type TriggerPolicy struct {
	K8s    *K8sResourcePolicy `json:"k8s,omitempty"`
	Status *StatusPolicy      `json:"status,omitempty"`
}

// StatusPolicy lists the HTTP statuses that count as success.
type StatusPolicy struct {
	Allow []int32 `json:"allow"`
}

// TriggerTemplate names the trigger and holds exactly one trigger type.
type TriggerTemplate struct {
	Name            string                    `json:"name"`
	Conditions      string                    `json:"conditions,omitempty"`
	ConditionsReset []ConditionsResetCriteria `json:"conditionsReset,omitempty"`

	HTTP *HTTPTrigger `json:"http,omitempty"`
	Log  *LogTrigger  `json:"log,omitempty"`

	Kafka *KafkaTrigger `json:"kafka,omitempty"`
	NATS  *NATSTrigger  `json:"nats,omitempty"`
	Slack *SlackTrigger `json:"slack,omitempty"`
	Email *EmailTrigger `json:"email,omitempty"`

	K8s          *K8sTrigger          `json:"k8s,omitempty"`
	ArgoWorkflow *ArgoWorkflowTrigger `json:"argoWorkflow,omitempty"`
	AWSLambda    *AWSLambdaTrigger    `json:"awsLambda,omitempty"`
	Custom       *CustomTrigger       `json:"custom,omitempty"`

	OpenWhisk       Opaque `json:"openWhisk,omitempty"`
	AzureEventHubs  Opaque `json:"azureEventHubs,omitempty"`
	Pulsar          Opaque `json:"pulsar,omitempty"`
	AzureServiceBus Opaque `json:"azureServiceBus,omitempty"`
}

// KafkaTrigger produces a message to a Kafka topic, on any cluster.
type KafkaTrigger struct {
	URL             string             `json:"url"`
	Topic           string             `json:"topic"`
	Partition       int32              `json:"partition,omitempty"`
	Parameters      []TriggerParameter `json:"parameters,omitempty"`
	RequiredAcks    int32              `json:"requiredAcks,omitempty"`
	Compress        bool               `json:"compress,omitempty"`
	FlushFrequency  int32              `json:"flushFrequency,omitempty"`
	TLS             *TLSConfig         `json:"tls,omitempty"`
	Payload         []TriggerParameter `json:"payload,omitempty"`
	PartitioningKey *string            `json:"partitioningKey,omitempty"`
	Version         string             `json:"version,omitempty"`
	SASL            *SASLConfig        `json:"sasl,omitempty"`
	SchemaRegistry  Opaque             `json:"schemaRegistry,omitempty"`
	Headers         map[string]string  `json:"headers,omitempty"`
	SecureHeaders   []*SecureHeader    `json:"secureHeaders,omitempty"`
}

// NATSTrigger publishes a message to a NATS subject.
type NATSTrigger struct {
	URL        string             `json:"url"`
	Subject    string             `json:"subject"`
	Payload    []TriggerParameter `json:"payload,omitempty"`
	Parameters []TriggerParameter `json:"parameters,omitempty"`
	TLS        *TLSConfig         `json:"tls,omitempty"`
	Auth       *NATSAuth          `json:"auth,omitempty"`
}

// SlackTrigger posts a message to a Slack channel.
type SlackTrigger struct {
	Parameters  []TriggerParameter `json:"parameters,omitempty"`
	SlackToken  *SecretKeySelector `json:"slackToken,omitempty"`
	Channel     string             `json:"channel,omitempty"`
	Message     string             `json:"message,omitempty"`
	Attachments string             `json:"attachments,omitempty"`
	Blocks      string             `json:"blocks,omitempty"`
	Thread      *SlackThread       `json:"thread,omitempty"`
	Sender      *SlackSender       `json:"sender,omitempty"`
}

// SlackThread groups a trigger's messages in one thread.
type SlackThread struct {
	MessageAggregationKey     string `json:"messageAggregationKey,omitempty"`
	BroadcastMessageToChannel bool   `json:"broadcastMessageToChannel,omitempty"`
}

// SlackSender sets the name and icon a message is posted with.
type SlackSender struct {
	Username string `json:"username,omitempty"`
	Icon     string `json:"icon,omitempty"`
}

// EmailTrigger sends an email through an SMTP server.
type EmailTrigger struct {
	Parameters   []TriggerParameter `json:"parameters,omitempty"`
	Username     string             `json:"username,omitempty"`
	SMTPPassword *SecretKeySelector `json:"smtpPassword,omitempty"`
	Host         string             `json:"host,omitempty"`
	Port         int32              `json:"port,omitempty"`
	To           []string           `json:"to,omitempty"`
	From         string             `json:"from,omitempty"`
	Subject      string             `json:"subject,omitempty"`
	Body         string             `json:"body,omitempty"`
}

// TLSConfig configures TLS to a target; certificates and keys are Secret references.
type TLSConfig struct {
	CACertSecret       *SecretKeySelector `json:"caCertSecret,omitempty"`
	ClientCertSecret   *SecretKeySelector `json:"clientCertSecret,omitempty"`
	ClientKeySecret    *SecretKeySelector `json:"clientKeySecret,omitempty"`
	InsecureSkipVerify bool               `json:"insecureSkipVerify,omitempty"`
	Enabled            bool               `json:"enabled,omitempty"`
}

// SASLConfig authenticates to Kafka.
type SASLConfig struct {
	Mechanism      string             `json:"mechanism,omitempty"`
	UserSecret     *SecretKeySelector `json:"userSecret,omitempty"`
	PasswordSecret *SecretKeySelector `json:"passwordSecret,omitempty"`
}

// NATSAuth authenticates to NATS.
type NATSAuth struct {
	Basic      *BasicAuth         `json:"basic,omitempty"`
	Token      *SecretKeySelector `json:"token,omitempty"`
	NKey       *SecretKeySelector `json:"nkey,omitempty"`
	Credential *SecretKeySelector `json:"credential,omitempty"`
}

// BasicAuth is a user name and password, both Secret references.
type BasicAuth struct {
	Username *SecretKeySelector `json:"username,omitempty"`
	Password *SecretKeySelector `json:"password,omitempty"`
}

// SecureHeader is a header whose value comes from a Secret or ConfigMap.
type SecureHeader struct {
	Name      string           `json:"name,omitempty"`
	ValueFrom *ValueFromSource `json:"valueFrom,omitempty"`
}

// ValueFromSource names a Secret or ConfigMap key.
type ValueFromSource struct {
	SecretKeyRef    *SecretKeySelector    `json:"secretKeyRef,omitempty"`
	ConfigMapKeyRef *ConfigMapKeySelector `json:"configMapKeyRef,omitempty"`
}

// ConditionsResetCriteria resets a trigger's pending condition state.
type ConditionsResetCriteria struct {
	ByTime *ConditionsResetByTime `json:"byTime,omitempty"`
}

// ConditionsResetByTime resets on a cron schedule.
type ConditionsResetByTime struct {
	Cron     string `json:"cron,omitempty"`
	Timezone string `json:"timezone,omitempty"`
}

// HTTPTrigger calls an HTTP endpoint.
type HTTPTrigger struct {
	URL            string             `json:"url"`
	Payload        []TriggerParameter `json:"payload,omitempty"`
	TLS            *TLSConfig         `json:"tls,omitempty"`
	Method         string             `json:"method,omitempty"`
	Parameters     []TriggerParameter `json:"parameters,omitempty"`
	Timeout        int64              `json:"timeout,omitempty"`
	BasicAuth      *BasicAuth         `json:"basicAuth,omitempty"`
	Headers        map[string]string  `json:"headers,omitempty"`
	SecureHeaders  []*SecureHeader    `json:"secureHeaders,omitempty"`
	DynamicHeaders []TriggerParameter `json:"dynamicHeaders,omitempty"`
	// Host overrides the request's Host header.
	Host string `json:"host,omitempty"`
}

// LogTrigger prints the events that fired the trigger.
type LogTrigger struct {
	IntervalSeconds uint64 `json:"intervalSeconds,omitempty"`
}

// TriggerParameter writes a value taken from an event into the trigger's payload or resource.
type TriggerParameter struct {
	Src       *TriggerParameterSource `json:"src,omitempty"`
	Dest      string                  `json:"dest"`
	Operation string                  `json:"operation,omitempty"`
}

// TriggerParameterSource says where a parameter's value comes from.
type TriggerParameterSource struct {
	DependencyName  string  `json:"dependencyName"`
	ContextKey      string  `json:"contextKey,omitempty"`
	ContextTemplate string  `json:"contextTemplate,omitempty"`
	DataKey         string  `json:"dataKey,omitempty"`
	DataTemplate    string  `json:"dataTemplate,omitempty"`
	Value           *string `json:"value,omitempty"`
	UseRawData      bool    `json:"useRawData,omitempty"`
}
