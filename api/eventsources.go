package api

// WebhookContext is the HTTP endpoint a webhook-based source (github, gitlab, ...) listens on.
type WebhookContext struct {
	Endpoint         string             `json:"endpoint"`
	Method           string             `json:"method"`
	Port             string             `json:"port"`
	URL              string             `json:"url,omitempty"`
	ServerCertSecret *SecretKeySelector `json:"serverCertSecret,omitempty"`
	ServerKeySecret  *SecretKeySelector `json:"serverKeySecret,omitempty"`
	Metadata         map[string]string  `json:"metadata,omitempty"`
	AuthSecret       *SecretKeySelector `json:"authSecret,omitempty"`
	MaxPayloadSize   *int64             `json:"maxPayloadSize,omitempty"`
}

// GithubEventSource receives GitHub webhook deliveries.
type GithubEventSource struct {
	ID                   int64               `json:"id,omitempty"`
	Webhook              *WebhookContext     `json:"webhook,omitempty"`
	DeprecatedOwner      string              `json:"owner,omitempty"`
	DeprecatedRepository string              `json:"repository,omitempty"`
	Events               []string            `json:"events"`
	APIToken             *SecretKeySelector  `json:"apiToken,omitempty"`
	WebhookSecret        *SecretKeySelector  `json:"webhookSecret,omitempty"`
	Insecure             bool                `json:"insecure,omitempty"`
	Active               bool                `json:"active,omitempty"`
	ContentType          string              `json:"contentType,omitempty"`
	GithubBaseURL        string              `json:"githubBaseURL,omitempty"`
	GithubUploadURL      string              `json:"githubUploadURL,omitempty"`
	DeleteHookOnFinish   bool                `json:"deleteHookOnFinish,omitempty"`
	Metadata             map[string]string   `json:"metadata,omitempty"`
	Repositories         []OwnedRepositories `json:"repositories,omitempty"`
	Organizations        []string            `json:"organizations,omitempty"`
	GithubApp            *GithubAppCreds     `json:"githubApp,omitempty"`
	Filter               *EventSourceFilter  `json:"filter,omitempty"`
}

// OwnedRepositories names repositories of one owner.
type OwnedRepositories struct {
	Owner string   `json:"owner,omitempty"`
	Names []string `json:"names,omitempty"`
}

// GithubAppCreds authenticates as a GitHub App.
type GithubAppCreds struct {
	PrivateKey     *SecretKeySelector `json:"privateKey"`
	AppID          int64              `json:"appID"`
	InstallationID int64              `json:"installationID"`
}

// GitlabEventSource receives GitLab webhook deliveries.
type GitlabEventSource struct {
	Webhook               *WebhookContext    `json:"webhook,omitempty"`
	DeprecatedProjectID   string             `json:"projectID,omitempty"`
	Events                []string           `json:"events"`
	AccessToken           *SecretKeySelector `json:"accessToken,omitempty"`
	EnableSSLVerification bool               `json:"enableSSLVerification,omitempty"`
	GitlabBaseURL         string             `json:"gitlabBaseURL,omitempty"`
	DeleteHookOnFinish    bool               `json:"deleteHookOnFinish,omitempty"`
	Metadata              map[string]string  `json:"metadata,omitempty"`
	Projects              []string           `json:"projects,omitempty"`
	SecretToken           *SecretKeySelector `json:"secretToken,omitempty"`
	Filter                *EventSourceFilter `json:"filter,omitempty"`
	Groups                []string           `json:"groups,omitempty"`
}

// NATSEventsSource subscribes to a NATS subject.
type NATSEventsSource struct {
	URL               string             `json:"url"`
	Subject           string             `json:"subject"`
	ConnectionBackoff *Backoff           `json:"connectionBackoff,omitempty"`
	JSONBody          bool               `json:"jsonBody,omitempty"`
	TLS               *TLSConfig         `json:"tls,omitempty"`
	Metadata          map[string]string  `json:"metadata,omitempty"`
	Auth              *NATSAuth          `json:"auth,omitempty"`
	Filter            *EventSourceFilter `json:"filter,omitempty"`
	Queue             *string            `json:"queue,omitempty"`
}

// KafkaEventSource consumes a topic of a (user's) Kafka cluster.
type KafkaEventSource struct {
	URL                  string              `json:"url"`
	Partition            string              `json:"partition,omitempty"`
	Topic                string              `json:"topic"`
	ConnectionBackoff    *Backoff            `json:"connectionBackoff,omitempty"`
	TLS                  *TLSConfig          `json:"tls,omitempty"`
	JSONBody             bool                `json:"jsonBody,omitempty"`
	Metadata             map[string]string   `json:"metadata,omitempty"`
	ConsumerGroup        *KafkaConsumerGroup `json:"consumerGroup,omitempty"`
	LimitEventsPerSecond int64               `json:"limitEventsPerSecond,omitempty"`
	Version              string              `json:"version,omitempty"`
	SASL                 *SASLConfig         `json:"sasl,omitempty"`
	Filter               *EventSourceFilter  `json:"filter,omitempty"`
	Config               string              `json:"config,omitempty"`
	SchemaRegistry       Opaque              `json:"schemaRegistry,omitempty"`
	AWSMSKIAMAuth        Opaque              `json:"awsMskIamAuth,omitempty"`
}

// KafkaConsumerGroup names the consumer group a Kafka event source joins.
type KafkaConsumerGroup struct {
	GroupName         string `json:"groupName"`
	Oldest            bool   `json:"oldest,omitempty"`
	RebalanceStrategy string `json:"rebalanceStrategy,omitempty"`
}

// SQSEventSource receives messages from an AWS SQS queue.
type SQSEventSource struct {
	AccessKey       *SecretKeySelector `json:"accessKey,omitempty"`
	SecretKey       *SecretKeySelector `json:"secretKey,omitempty"`
	Region          string             `json:"region"`
	Queue           string             `json:"queue"`
	WaitTimeSeconds int64              `json:"waitTimeSeconds,omitempty"`
	RoleARN         string             `json:"roleARN,omitempty"`
	JSONBody        bool               `json:"jsonBody,omitempty"`
	QueueAccountID  string             `json:"queueAccountId,omitempty"`
	Metadata        map[string]string  `json:"metadata,omitempty"`
	DLQ             bool               `json:"dlq,omitempty"`
	Filter          *EventSourceFilter `json:"filter,omitempty"`
	Endpoint        string             `json:"endpoint,omitempty"`
	SessionToken    *SecretKeySelector `json:"sessionToken,omitempty"`
}

// CalendarEventSource fires on a cron schedule or at a fixed interval.
type CalendarEventSource struct {
	// Schedule is a five-field cron expression (minute hour day-of-month month day-of-week), as
	// Argo parses it: no seconds, no descriptors such as @every; a TZ= prefix is allowed.
	Schedule string `json:"schedule,omitempty"`
	// Interval is a Go duration such as "10s"; Schedule wins when both are set in Argo.
	Interval string `json:"interval,omitempty"`
	// ExclusionDates are RFC 5545 EXDATE values ("EXDATE:20190102T150405Z[,...]"): a fire that
	// falls on one of their days is skipped.
	ExclusionDates []string           `json:"exclusionDates,omitempty"`
	Timezone       string             `json:"timezone,omitempty"`
	Metadata       map[string]string  `json:"metadata,omitempty"`
	Persistence    *EventPersistence  `json:"persistence,omitempty"`
	Filter         *EventSourceFilter `json:"filter,omitempty"`
}

// EventPersistence says whether a calendar catches up on the fires it missed.
type EventPersistence struct {
	Catchup *CatchupConfiguration `json:"catchup,omitempty"`
	// ConfigMap is where Argo keeps the last fire; kevents keeps it in Kafka and ignores it.
	ConfigMap *ConfigMapPersistence `json:"configMap,omitempty"`
}

// CatchupConfiguration enables catch-up; MaxDuration (a Go duration) bounds how far back.
type CatchupConfiguration struct {
	Enabled     bool   `json:"enabled,omitempty"`
	MaxDuration string `json:"maxDuration,omitempty"`
}

// ConfigMapPersistence names the ConfigMap Argo keeps a calendar's last fire in.
type ConfigMapPersistence struct {
	Name             string `json:"name,omitempty"`
	CreateIfNotExist bool   `json:"createIfNotExist,omitempty"`
}

// FileEventSource watches a directory for file system events.
type FileEventSource struct {
	// EventType is the operation to listen to, as fsnotify names it: CREATE, WRITE, REMOVE,
	// RENAME or CHMOD.
	EventType       string          `json:"eventType"`
	WatchPathConfig WatchPathConfig `json:"watchPathConfig"`
	// Polling scans the directory instead of asking the kernel for notifications (for file
	// systems without them, such as some network mounts).
	Polling  bool               `json:"polling,omitempty"`
	Metadata map[string]string  `json:"metadata,omitempty"`
	Filter   *EventSourceFilter `json:"filter,omitempty"`
}

// WatchPathConfig names the files of a directory to watch: Path or PathRegexp, both relative
// to Directory.
type WatchPathConfig struct {
	Directory  string `json:"directory"`
	Path       string `json:"path,omitempty"`
	PathRegexp string `json:"pathRegexp,omitempty"`
}

// ResourceEventSource watches Kubernetes objects of one resource.
type ResourceEventSource struct {
	// Namespace to watch; empty watches every namespace.
	Namespace string          `json:"namespace"`
	Filter    *ResourceFilter `json:"filter,omitempty"`
	Group     string          `json:"group"`
	Version   string          `json:"version"`
	Resource  string          `json:"resource"`
	// EventTypes are ADD, UPDATE and DELETE.
	EventTypes []string          `json:"eventTypes"`
	Metadata   map[string]string `json:"metadata,omitempty"`
}

// ResourceFilter narrows the objects a resource event source reports.
type ResourceFilter struct {
	Prefix string     `json:"prefix,omitempty"`
	Labels []Selector `json:"labels,omitempty"`
	Fields []Selector `json:"fields,omitempty"`
	// CreatedBy is an RFC 3339 time (Argo's metav1.Time): only objects created before it pass.
	// Opaque so that an unquoted YAML timestamp loads as it does in Argo.
	CreatedBy  Opaque `json:"createdBy,omitempty"`
	AfterStart bool   `json:"afterStart,omitempty"`
}

// Selector is one label or field requirement of a resource filter.
type Selector struct {
	Key       string `json:"key"`
	Operation string `json:"operation,omitempty"`
	Value     string `json:"value"`
}

// BitbucketServerEventSource receives Bitbucket Server (Data Center) webhook deliveries.
type BitbucketServerEventSource struct {
	Webhook                       *WebhookContext             `json:"webhook,omitempty"`
	DeprecatedProjectKey          string                      `json:"projectKey,omitempty"`
	DeprecatedRepositorySlug      string                      `json:"repositorySlug,omitempty"`
	Projects                      []string                    `json:"projects,omitempty"`
	Repositories                  []BitbucketServerRepository `json:"repositories,omitempty"`
	Events                        []string                    `json:"events"`
	SkipBranchRefsChangedOnOpenPR bool                        `json:"skipBranchRefsChangedOnOpenPR,omitempty"`
	OneEventPerChange             bool                        `json:"oneEventPerChange,omitempty"`
	AccessToken                   *SecretKeySelector          `json:"accessToken,omitempty"`
	WebhookSecret                 *SecretKeySelector          `json:"webhookSecret,omitempty"`
	BitbucketServerBaseURL        string                      `json:"bitbucketserverBaseURL"`
	DeleteHookOnFinish            bool                        `json:"deleteHookOnFinish,omitempty"`
	Metadata                      map[string]string           `json:"metadata,omitempty"`
	Filter                        *EventSourceFilter          `json:"filter,omitempty"`
	TLS                           *TLSConfig                  `json:"tls,omitempty"`
	CheckInterval                 string                      `json:"checkInterval"`
}

// BitbucketServerRepository names a repository of a Bitbucket Server project.
type BitbucketServerRepository struct {
	ProjectKey     string `json:"projectKey"`
	RepositorySlug string `json:"repositorySlug"`
}

// BitbucketEventSource receives Bitbucket Cloud webhook deliveries.
type BitbucketEventSource struct {
	DeleteHookOnFinish       bool                  `json:"deleteHookOnFinish,omitempty"`
	Metadata                 map[string]string     `json:"metadata,omitempty"`
	Webhook                  *WebhookContext       `json:"webhook"`
	Auth                     *BitbucketAuth        `json:"auth"`
	Events                   []string              `json:"events"`
	DeprecatedOwner          string                `json:"owner,omitempty"`
	DeprecatedProjectKey     string                `json:"projectKey,omitempty"`
	DeprecatedRepositorySlug string                `json:"repositorySlug,omitempty"`
	Repositories             []BitbucketRepository `json:"repositories,omitempty"`
	Filter                   *EventSourceFilter    `json:"filter,omitempty"`
}

// BitbucketAuth authenticates to the Bitbucket Cloud API: basic or oauthToken.
type BitbucketAuth struct {
	Basic      *BitbucketBasicAuth `json:"basic,omitempty"`
	OAuthToken *SecretKeySelector  `json:"oauthToken,omitempty"`
}

// BitbucketBasicAuth is a user name and (app) password, both Secret references.
type BitbucketBasicAuth struct {
	Username *SecretKeySelector `json:"username"`
	Password *SecretKeySelector `json:"password"`
}

// BitbucketRepository names a Bitbucket Cloud repository.
type BitbucketRepository struct {
	Owner          string `json:"owner"`
	RepositorySlug string `json:"repositorySlug"`
}

// StripeEventSource receives Stripe webhook deliveries.
type StripeEventSource struct {
	Webhook       *WebhookContext    `json:"webhook,omitempty"`
	CreateWebhook bool               `json:"createWebhook,omitempty"`
	APIKey        *SecretKeySelector `json:"apiKey,omitempty"`
	EventFilter   []string           `json:"eventFilter,omitempty"`
	Metadata      map[string]string  `json:"metadata,omitempty"`
	// Kevents holds kevents' extensions to Argo's stripe event source; Argo has no such field.
	Kevents *StripeExtensions `json:"kevents,omitempty"`
}

// StripeExtensions are what kevents adds to a stripe event source.
type StripeExtensions struct {
	// SigningSecret is the endpoint's signing secret (whsec_...): deliveries must then carry a
	// valid Stripe-Signature. Argo checks no signature.
	SigningSecret *SecretKeySelector `json:"signingSecret,omitempty"`
}

// SlackEventSource receives Slack Events API requests, interactions and slash commands.
type SlackEventSource struct {
	SigningSecret *SecretKeySelector `json:"signingSecret,omitempty"`
	Token         *SecretKeySelector `json:"token,omitempty"`
	Webhook       *WebhookContext    `json:"webhook,omitempty"`
	Metadata      map[string]string  `json:"metadata,omitempty"`
	Filter        *EventSourceFilter `json:"filter,omitempty"`
}

// RedisEventSource subscribes to Redis pub/sub channels.
type RedisEventSource struct {
	HostAddress string             `json:"hostAddress"`
	Password    *SecretKeySelector `json:"password,omitempty"`
	// Namespace is where Argo reads the password Secret from; kevents resolves Secrets as it
	// does for every source and ignores it.
	Namespace string `json:"namespace,omitempty"`
	DB        int32  `json:"db,omitempty"`
	// Channels are channel names, subscribed with SUBSCRIBE as Argo does: '*' or '?' in a name
	// match only themselves, not other channels.
	Channels []string           `json:"channels"`
	TLS      *TLSConfig         `json:"tls,omitempty"`
	Metadata map[string]string  `json:"metadata,omitempty"`
	Filter   *EventSourceFilter `json:"filter,omitempty"`
	JSONBody bool               `json:"jsonBody,omitempty"`
	Username string             `json:"username,omitempty"`
}

// RedisStreamEventSource reads Redis streams through a consumer group.
type RedisStreamEventSource struct {
	HostAddress string             `json:"hostAddress"`
	Password    *SecretKeySelector `json:"password,omitempty"`
	DB          int32              `json:"db,omitempty"`
	Streams     []string           `json:"streams"`
	// MaxMsgCountPerRead is the COUNT of each XREADGROUP, per stream; 0 means 10.
	MaxMsgCountPerRead int32 `json:"maxMsgCountPerRead,omitempty"`
	// ConsumerGroup is created on every stream if missing; empty means argo-events-cg.
	ConsumerGroup string             `json:"consumerGroup,omitempty"`
	TLS           *TLSConfig         `json:"tls,omitempty"`
	Metadata      map[string]string  `json:"metadata,omitempty"`
	Filter        *EventSourceFilter `json:"filter,omitempty"`
	Username      string             `json:"username,omitempty"`
}

// MQTTEventSource subscribes to an MQTT topic filter.
type MQTTEventSource struct {
	URL               string             `json:"url"`
	Topic             string             `json:"topic"`
	ClientID          string             `json:"clientId"`
	ConnectionBackoff *Backoff           `json:"connectionBackoff,omitempty"`
	JSONBody          bool               `json:"jsonBody,omitempty"`
	TLS               *TLSConfig         `json:"tls,omitempty"`
	Metadata          map[string]string  `json:"metadata,omitempty"`
	Filter            *EventSourceFilter `json:"filter,omitempty"`
	Auth              *BasicAuth         `json:"auth,omitempty"`
}
