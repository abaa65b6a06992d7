package api

// K8sTrigger creates, updates, patches or deletes a Kubernetes object (Argo's
// StandardK8STrigger).
type K8sTrigger struct {
	Source     *ArtifactLocation  `json:"source,omitempty"`
	Operation  string             `json:"operation,omitempty"`
	Parameters []TriggerParameter `json:"parameters,omitempty"`
	// PatchStrategy is a patch content type; empty means a JSON merge patch.
	PatchStrategy string `json:"patchStrategy,omitempty"`
	LiveObject    bool   `json:"liveObject,omitempty"`
}

// ArgoWorkflowTrigger submits or acts on an Argo Workflow.
type ArgoWorkflowTrigger struct {
	Source     *ArtifactLocation  `json:"source,omitempty"`
	Operation  string             `json:"operation,omitempty"`
	Parameters []TriggerParameter `json:"parameters,omitempty"`
	// Args are extra arguments of the argo CLI, which kevents does not run.
	Args []string `json:"args,omitempty"`
}

// ArtifactLocation says where a trigger's resource comes from; exactly one field is set.
type ArtifactLocation struct {
	S3        Opaque                `json:"s3,omitempty"`
	Inline    *string               `json:"inline,omitempty"`
	File      *FileArtifact         `json:"file,omitempty"`
	URL       *URLArtifact          `json:"url,omitempty"`
	Configmap *ConfigMapKeySelector `json:"configmap,omitempty"`
	Git       *GitArtifact          `json:"git,omitempty"`
	// Resource is the object itself, written inline in the sensor.
	Resource Opaque `json:"resource,omitempty"`
}

// FileArtifact is a resource in a file the executor can read.
type FileArtifact struct {
	Path string `json:"path,omitempty"`
}

// URLArtifact is a resource fetched over HTTP(S).
type URLArtifact struct {
	Path       string `json:"path"`
	VerifyCert bool   `json:"verifyCert,omitempty"`
}

// GitArtifact is a resource in a file of a Git repository.
type GitArtifact struct {
	URL                   string             `json:"url"`
	CloneDirectory        string             `json:"cloneDirectory"`
	Creds                 *GitCreds          `json:"creds,omitempty"`
	SSHKeySecret          *SecretKeySelector `json:"sshKeySecret,omitempty"`
	FilePath              string             `json:"filePath"`
	Branch                string             `json:"branch,omitempty"`
	Tag                   string             `json:"tag,omitempty"`
	Ref                   string             `json:"ref,omitempty"`
	Remote                *GitRemoteConfig   `json:"remote,omitempty"`
	InsecureIgnoreHostKey bool               `json:"insecureIgnoreHostKey,omitempty"`
	GithubApp             Opaque             `json:"githubApp,omitempty"`
}

// GitCreds are a user name and password for a Git server, both Secret references.
type GitCreds struct {
	Username *SecretKeySelector `json:"username,omitempty"`
	Password *SecretKeySelector `json:"password,omitempty"`
}

// GitRemoteConfig names an extra remote to fetch from.
type GitRemoteConfig struct {
	Name string   `json:"name"`
	URLS []string `json:"urls"`
}

// K8sResourcePolicy makes a Kubernetes trigger succeed only once the object it acted on carries
// the given labels, polled with Backoff.
type K8sResourcePolicy struct {
	Labels                map[string]string `json:"labels,omitempty"`
	Backoff               *Backoff          `json:"backoff"`
	ErrorOnBackoffTimeout bool              `json:"errorOnBackoffTimeout"`
}

// AWSLambdaTrigger invokes an AWS Lambda function.
type AWSLambdaTrigger struct {
	FunctionName   string             `json:"functionName"`
	AccessKey      *SecretKeySelector `json:"accessKey,omitempty"`
	SecretKey      *SecretKeySelector `json:"secretKey,omitempty"`
	Region         string             `json:"region"`
	Payload        []TriggerParameter `json:"payload"`
	Parameters     []TriggerParameter `json:"parameters,omitempty"`
	InvocationType *string            `json:"invocationType,omitempty"`
	RoleARN        string             `json:"roleARN,omitempty"`
}

// CustomTrigger hands the trigger to a user's gRPC server speaking Argo's trigger protocol.
type CustomTrigger struct {
	ServerURL          string             `json:"serverURL"`
	Secure             bool               `json:"secure"`
	CertSecret         *SecretKeySelector `json:"certSecret,omitempty"`
	ServerNameOverride string             `json:"serverNameOverride,omitempty"`
	Spec               map[string]string  `json:"spec"`
	Parameters         []TriggerParameter `json:"parameters,omitempty"`
	Payload            []TriggerParameter `json:"payload"`
}
