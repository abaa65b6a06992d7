package topology

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Strimzi API versions of KafkaTopic and KafkaUser. Strimzi 0.49 serves v1, v1beta2, v1beta1 and
// v1alpha1; Strimzi 1.x serves v1 only. v1 is the one version both serve, hence the default.
const (
	StrimziV1      = "v1"
	StrimziV1Beta2 = "v1beta2" // Strimzi 0.22 to 0.49
	strimziGroup   = "kafka.strimzi.io"
)

// KafkaUser authentication types kevents renders.
const (
	AuthTLS         = "tls"           // mutual TLS with a certificate the User Operator issues
	AuthSCRAMSHA512 = "scram-sha-512" // a password the User Operator generates
)

// The stages that connect to Kafka, one KafkaUser each.
const (
	ComponentSource   = "source"
	ComponentSensor   = "sensor"
	ComponentExecutor = "executor"
)

// ACL resource types, pattern types and operations, as Strimzi spells them.
const (
	aclTopic = "topic"
	aclGroup = "group"
	aclTxnID = "transactionalId"
	literal  = "literal"
	prefixed = "prefix"
	opRead   = "Read"
	opWrite  = "Write"
	opDescr  = "Describe"
)

// StrimziClusterLabel names the Kafka cluster of a KafkaTopic or KafkaUser.
const StrimziClusterLabel = "strimzi.io/cluster"

// maxTLSUserName is Strimzi's limit on a KafkaUser name with tls authentication: the name is the
// certificate's common name, which X.509 caps at 64 characters.
const maxTLSUserName = 64

// StrimziOptions say how to render kevents' topics and users for Strimzi's Topic and User
// Operators.
type StrimziOptions struct {
	// Cluster names the Kafka resource; it becomes the strimzi.io/cluster label the operators
	// select by. Required.
	Cluster string
	// Namespace of every object; empty leaves it to the client (kubectl apply -n). The operators
	// watch one namespace, by default the Kafka cluster's.
	Namespace string
	// APIVersion is StrimziV1 (empty means it) or StrimziV1Beta2.
	APIVersion string
	// Authentication of the KafkaUsers: AuthTLS (empty means it) or AuthSCRAMSHA512.
	Authentication string
}

// ObjectMeta is the part of Kubernetes object metadata that kevents sets.
type ObjectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// KafkaTopic is a Strimzi KafkaTopic.
type KafkaTopic struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   ObjectMeta     `json:"metadata"`
	Spec       KafkaTopicSpec `json:"spec"`
}

// KafkaTopicSpec is a KafkaTopic's spec. TopicName is set only when the topic name is not a valid
// Kubernetes object name, as Strimzi recommends.
type KafkaTopicSpec struct {
	TopicName  string            `json:"topicName,omitempty"`
	Partitions int32             `json:"partitions"`
	Replicas   int16             `json:"replicas,omitempty"` // 0: the broker's default.replication.factor
	Config     map[string]string `json:"config,omitempty"`
}

// KafkaUser is a Strimzi KafkaUser.
type KafkaUser struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   ObjectMeta    `json:"metadata"`
	Spec       KafkaUserSpec `json:"spec"`
}

// KafkaUserSpec is a KafkaUser's spec.
type KafkaUserSpec struct {
	Authentication KafkaUserAuthentication `json:"authentication"`
	Authorization  KafkaUserAuthorization  `json:"authorization"`
}

// KafkaUserAuthentication is AuthTLS or AuthSCRAMSHA512.
type KafkaUserAuthentication struct {
	Type string `json:"type"`
}

// KafkaUserAuthorization is "simple" authorization: the ACLs, all of type allow.
type KafkaUserAuthorization struct {
	Type string    `json:"type"`
	ACLs []ACLRule `json:"acls"`
}

// ACLRule allows Operations on Resource.
type ACLRule struct {
	Resource   ACLResource `json:"resource"`
	Operations []string    `json:"operations"`
}

// ACLResource is a topic, group or transactionalId, named literally or by prefix.
type ACLResource struct {
	Type        string `json:"type"`
	Name        string `json:"name"`
	PatternType string `json:"patternType"`
}

// StrimziResources are the objects Strimzi needs for one kevents installation.
type StrimziResources struct {
	Topics []KafkaTopic
	Users  []KafkaUser // source, sensor, executor
}

// Objects returns the topics, then the users.
func (r *StrimziResources) Objects() []any {
	out := make([]any, 0, len(r.Topics)+len(r.Users))
	for _, t := range r.Topics {
		out = append(out, t)
	}
	for _, u := range r.Users {
		out = append(out, u)
	}
	return out
}

// Strimzi renders a KafkaTopic for every topic Topics(sourceTopics...) specifies, with its
// partitions, replicas and configs, and a KafkaUser per stage (source, sensor, executor) allowed
// exactly what that stage does. sourceTopics are the topics of the EventSources the installation
// runs (names from SourceTopic); their ACLs are literal. Without any, the source and sensor users
// get the source topics by prefix, "<prefix>.src.", so EventSources can be added without
// rendering users again.
//
// Errors wrap ErrInvalidOption (a bad option, naming it) or ErrInvalidTopicName.
func (t *Topology) Strimzi(o StrimziOptions, sourceTopics ...string) (*StrimziResources, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	specs := t.Topics(sourceTopics...)
	if err := checkSpecs(specs); err != nil {
		return nil, err
	}
	apiVersion := strimziGroup + "/" + cmp.Or(o.APIVersion, StrimziV1)
	labels := func(component string) map[string]string {
		l := map[string]string{StrimziClusterLabel: o.Cluster, "app.kubernetes.io/part-of": "kevents"}
		if component != "" {
			l["app.kubernetes.io/component"] = component
		}
		return l
	}
	res := &StrimziResources{}
	for _, s := range specs {
		kt := KafkaTopic{
			APIVersion: apiVersion,
			Kind:       "KafkaTopic",
			Metadata:   ObjectMeta{Name: kubeName(s.Name), Namespace: o.Namespace, Labels: labels("")},
			Spec:       KafkaTopicSpec{Partitions: s.Partitions, Config: s.Configs},
		}
		if kt.Metadata.Name != s.Name {
			kt.Spec.TopicName = s.Name
		}
		if s.ReplicationFactor > 0 {
			kt.Spec.Replicas = s.ReplicationFactor
		}
		res.Topics = append(res.Topics, kt)
	}
	auth := cmp.Or(o.Authentication, AuthTLS)
	for _, c := range []string{ComponentSource, ComponentSensor, ComponentExecutor} {
		name := t.StrimziUserName(c)
		if auth == AuthTLS && len(name) > maxTLSUserName {
			return nil, fmt.Errorf("%w: Authentication %q: KafkaUser name %q is %d characters, Strimzi allows at most %d with tls (it is the certificate's common name); use a shorter topic prefix or %s",
				ErrInvalidOption, auth, name, len(name), maxTLSUserName, AuthSCRAMSHA512)
		}
		res.Users = append(res.Users, KafkaUser{
			APIVersion: apiVersion,
			Kind:       "KafkaUser",
			Metadata:   ObjectMeta{Name: name, Namespace: o.Namespace, Labels: labels(c)},
			Spec: KafkaUserSpec{
				Authentication: KafkaUserAuthentication{Type: auth},
				Authorization:  KafkaUserAuthorization{Type: "simple", ACLs: t.acls(c, sourceTopics)},
			},
		})
	}
	return res, nil
}

// StrimziUserName is the KafkaUser of a component ("source", "sensor", "executor"):
// "<prefix>-<component>", which is also the name of the Secret the User Operator writes its
// credentials to.
func (t *Topology) StrimziUserName(component string) string {
	return kubeName(t.prefix + "-" + component)
}

// acls returns what one stage may do. Read and Write imply Describe in Kafka; Describe is listed
// anyway so a reader sees every operation a stage performs (metadata, offsets for lag).
//
// No cluster ACL is needed: Kafka 3.0 and later let a principal with Write on a topic start an
// idempotent producer (KIP-679), and every Kafka that Strimzi 0.49 or later runs is 4.x.
func (t *Topology) acls(component string, sourceTopics []string) []ACLRule {
	rule := func(typ, name, pattern string, ops ...string) ACLRule {
		return ACLRule{Resource: ACLResource{Type: typ, Name: name, PatternType: pattern}, Operations: ops}
	}
	// The source topics: literal when the definitions are known, otherwise every present and
	// future EventSource of this installation by prefix.
	sources := func(ops ...string) []ACLRule {
		if len(sourceTopics) == 0 {
			return []ACLRule{rule(aclTopic, t.prefix+"."+sfxSource+".", prefixed, ops...)}
		}
		var out []ACLRule
		seen := map[string]bool{}
		for _, s := range sourceTopics {
			if !seen[s] {
				seen[s] = true
				out = append(out, rule(aclTopic, s, literal, ops...))
			}
		}
		return out
	}
	switch component {
	case ComponentSource:
		// Sources produce their events with an idempotent producer. Pull sources without a
		// consumer group of their own are owned through the partitions of <prefix>.sources,
		// consumed in the group <prefix>.sources; calendar last fires are written there in
		// transactions with ids <prefix>.sources.p<partition>.
		return append(sources(opWrite, opDescr),
			rule(aclTopic, t.Sources(), literal, opRead, opWrite, opDescr),
			rule(aclGroup, t.Sources(), literal, opRead, opDescr),
			rule(aclTxnID, t.Sources()+".", prefixed, opWrite, opDescr),
		)
	case ComponentSensor:
		// One consumer group <prefix>.sensor; one transaction per batch covers matches, state,
		// commands and the input offsets, with transactional id <prefix>.sensor.<member>.
		return append(sources(opRead, opDescr),
			rule(aclTopic, t.Matches(), literal, opRead, opWrite, opDescr),
			rule(aclTopic, t.State(), literal, opRead, opWrite, opDescr),
			rule(aclTopic, t.Commands(), literal, opWrite, opDescr),
			rule(aclGroup, t.prefix+".sensor", literal, opRead, opDescr),
			rule(aclTxnID, t.prefix+".sensor.", prefixed, opWrite, opDescr),
		)
	case ComponentExecutor:
		// The executor consumes commands in the group <prefix>.executor, restores and records
		// outcomes in executed, dead-letters to dlq, and issues a dlqTrigger as a new command.
		return []ACLRule{
			rule(aclTopic, t.Commands(), literal, opRead, opWrite, opDescr),
			rule(aclTopic, t.Executed(), literal, opRead, opWrite, opDescr),
			rule(aclTopic, t.DLQ(), literal, opWrite, opDescr),
			rule(aclGroup, t.prefix+".executor", literal, opRead, opDescr),
		}
	}
	return nil
}

func (o StrimziOptions) validate() error {
	var errs []error
	if o.Cluster == "" {
		errs = append(errs, fmt.Errorf("%w: Cluster: empty; expected the name of the Strimzi Kafka resource", ErrInvalidOption))
	} else if msgs := validation.IsValidLabelValue(o.Cluster); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("%w: Cluster %q: %s", ErrInvalidOption, o.Cluster, strings.Join(msgs, "; ")))
	}
	if o.Namespace != "" {
		if msgs := validation.IsDNS1123Label(o.Namespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%w: Namespace %q: %s", ErrInvalidOption, o.Namespace, strings.Join(msgs, "; ")))
		}
	}
	switch o.APIVersion {
	case "", StrimziV1, StrimziV1Beta2:
	default:
		errs = append(errs, fmt.Errorf("%w: APIVersion %q: expected %s (Strimzi 0.49 and later) or %s (Strimzi 0.22 to 0.49)",
			ErrInvalidOption, o.APIVersion, StrimziV1, StrimziV1Beta2))
	}
	switch o.Authentication {
	case "", AuthTLS, AuthSCRAMSHA512:
	default:
		errs = append(errs, fmt.Errorf("%w: Authentication %q: expected %s or %s", ErrInvalidOption, o.Authentication, AuthTLS, AuthSCRAMSHA512))
	}
	return errors.Join(errs...)
}

// kubeName maps a Kafka name to a Kubernetes object name. A name that is already valid (a
// DNS-1123 subdomain: lower case, digits, '-' and '.', which covers every name kevents derives
// with the default prefix) is kept, so `kubectl get kafkatopic kevents.matches` works. Otherwise
// (upper case or '_' in the prefix) it is lowered, every other character becomes '-', and 8 hex
// digits of the name's SHA-256 keep distinct names distinct.
func kubeName(name string) string {
	if len(validation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := hex.EncodeToString(sum[:4])
	s := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return '-'
	}, name)
	s = strings.Trim(s, "-")
	if limit := validation.DNS1123SubdomainMaxLength - len(suffix) - 1; len(s) > limit {
		s = strings.TrimRight(s[:limit], "-")
	}
	if s == "" {
		return suffix
	}
	return s + "-" + suffix
}
