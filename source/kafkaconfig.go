package source

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"
)

// kafkaConfig is what kevents takes from a kafka event's `config`: Argo's YAML of a sarama.Config
// (keys are sarama's field names at any case, as viper reads them). A setting franz-go has an
// equivalent for is honoured; one that only tunes sarama's internals, or the producer and admin
// clients a source never uses, is accepted and reported in noEffect; anything else is an error
// naming its path, where Argo would ignore it silently.
type kafkaConfig struct {
	opts            []kgo.Opt
	oldest          bool // consumer.offsets.initial: -2 (sarama.OffsetOldest)
	readUncommitted bool // consumer.isolationLevel: 0
	instanceID      string
	commitInterval  time.Duration // 0: kevents' default
	session         time.Duration
	heartbeat       time.Duration
	noEffect        []string // paths accepted without effect, with the reason
}

// kafkaConfigSetting is one honoured setting: apply sets it from its YAML value and returns
// false when the value is not what expect says.
type kafkaConfigSetting struct {
	expect string
	apply  func(c *kafkaConfig, v any) bool
}

// kafkaMaxWireTimeout is the longest timeout Kafka's int32-millisecond fields carry.
const kafkaMaxWireTimeout = time.Duration(math.MaxInt32) * time.Millisecond

// kafkaClientIDPattern is sarama's rule for client ids and group instance ids.
var kafkaClientIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// kafkaConfigSettings are the honoured settings by lower-cased path. The bounds are sarama's
// Validate rules, narrowed where franz-go's own validation is stricter, so a config that loads
// also starts.
var kafkaConfigSettings = map[string]kafkaConfigSetting{
	"clientid": stringSetting(kafkaClientIDPattern, "a client id of letters, digits, '.', '_' and '-'", func(c *kafkaConfig, s string) {
		c.opts = append(c.opts, kgo.ClientID(s))
	}),
	"rackid": stringSetting(regexp.MustCompile(`^.+$`), "a rack name", func(c *kafkaConfig, s string) {
		c.opts = append(c.opts, kgo.Rack(s))
	}),
	"net.dialtimeout": durationSetting(time.Millisecond, time.Hour, func(c *kafkaConfig, d time.Duration) {
		c.opts = append(c.opts, kgo.DialTimeout(d))
	}),
	"metadata.refreshfrequency": durationSetting(10*time.Millisecond, time.Hour, func(c *kafkaConfig, d time.Duration) {
		c.opts = append(c.opts, kgo.MetadataMaxAge(d))
		if d < 5*time.Second { // franz-go's minimum age must not exceed the maximum
			c.opts = append(c.opts, kgo.MetadataMinAge(d))
		}
	}),
	"consumer.fetch.min": intSetting(1, math.MaxInt32, func(c *kafkaConfig, n int64) {
		c.opts = append(c.opts, kgo.FetchMinBytes(int32(n)))
	}),
	"consumer.fetch.default": intSetting(1, math.MaxInt32, func(c *kafkaConfig, n int64) {
		c.opts = append(c.opts, kgo.FetchMaxPartitionBytes(int32(n)))
	}),
	// sarama's 0 is "no limit"; franz-go then keeps its 50 MiB. The upper bound is franz-go's
	// largest response (sarama's MaxResponseSize is the same 100 MiB).
	"consumer.fetch.max": intSetting(0, 100<<20, func(c *kafkaConfig, n int64) {
		if n > 0 {
			c.opts = append(c.opts, kgo.FetchMaxBytes(int32(n)))
		}
	}),
	"consumer.maxwaittime": durationSetting(10*time.Millisecond, kafkaMaxWireTimeout, func(c *kafkaConfig, d time.Duration) {
		c.opts = append(c.opts, kgo.FetchMaxWait(d))
	}),
	"consumer.offsets.initial": {
		expect: "-1 (newest, the default) or -2 (oldest)",
		apply: func(c *kafkaConfig, v any) bool {
			n, ok := configInt(v)
			c.oldest = n == -2
			return ok && (n == -1 || n == -2)
		},
	},
	"consumer.offsets.autocommit.enable": {
		expect: "true: kevents commits an offset once its event is in Kafka, and cannot leave offsets uncommitted",
		apply: func(_ *kafkaConfig, v any) bool {
			b, ok := configBool(v)
			return ok && b
		},
	},
	"consumer.offsets.autocommit.interval": durationSetting(100*time.Millisecond, time.Hour, func(c *kafkaConfig, d time.Duration) {
		c.commitInterval = d
	}),
	"consumer.isolationlevel": {
		expect: "0 (read uncommitted) or 1 (read committed, kevents' default)",
		apply: func(c *kafkaConfig, v any) bool {
			n, ok := configInt(v)
			c.readUncommitted = n == 0
			return ok && (n == 0 || n == 1)
		},
	},
	"consumer.group.session.timeout": durationSetting(100*time.Millisecond, kafkaMaxWireTimeout, func(c *kafkaConfig, d time.Duration) {
		c.session = d
		c.opts = append(c.opts, kgo.SessionTimeout(d))
	}),
	"consumer.group.heartbeat.interval": durationSetting(time.Millisecond, kafkaMaxWireTimeout, func(c *kafkaConfig, d time.Duration) {
		c.heartbeat = d
		c.opts = append(c.opts, kgo.HeartbeatInterval(d))
	}),
	"consumer.group.rebalance.timeout": durationSetting(100*time.Millisecond, kafkaMaxWireTimeout, func(c *kafkaConfig, d time.Duration) {
		c.opts = append(c.opts, kgo.RebalanceTimeout(d))
	}),
	// Kafka allows 249 characters; the member name is appended (see newKafkaSource).
	"consumer.group.instanceid": stringSetting(regexp.MustCompile(`^[A-Za-z0-9._-]{1,180}$`), "an instance id of up to 180 letters, digits, '.', '_' and '-'", func(c *kafkaConfig, s string) {
		c.instanceID = s
	}),
}

// kafkaConfigNoEffect are the sarama settings accepted without effect, by lower-cased path or
// path prefix (ending in "."), with the reason given in the warning.
var kafkaConfigNoEffect = map[string]string{
	"producer.":                          "the kafka source only consumes",
	"admin.":                             "the kafka source only consumes",
	"channelbuffersize":                  "franz-go has no channels to size",
	"net.maxopenrequests":                "franz-go pipelines requests on its own",
	"net.readtimeout":                    "franz-go derives request timeouts from each request",
	"net.writetimeout":                   "franz-go derives request timeouts from each request",
	"net.keepalive":                      "franz-go's dialer keeps connections alive",
	"metadata.retry.":                    "franz-go retries metadata with its own backoff",
	"metadata.full":                      "franz-go asks only for the topics it consumes",
	"metadata.allowautotopiccreation":    "a consumer does not create topics",
	"consumer.retry.":                    "franz-go retries fetches with its own backoff",
	"consumer.return.errors":             "fetch errors are logged and retried",
	"consumer.maxprocessingtime":         "records are handled as fetched",
	"consumer.group.rebalance.retry.":    "franz-go rejoins with its own backoff",
	"consumer.group.resetinvalidoffsets": "franz-go resets out-of-range offsets to the start offset",
	"consumer.offsets.retention":         "the cluster's offsets.retention.minutes applies",
	"consumer.offsets.retry.":            "franz-go retries offset commits with its own backoff",
}

// kafkaConfigRefused are sarama settings that have a kevents field of their own.
var kafkaConfigRefused = map[string]string{
	"net.tls.":                          "set tls on the event instead (certificates come from Secrets)",
	"net.sasl.":                         "set sasl on the event instead (credentials come from Secrets)",
	"version":                           "set version on the event instead",
	"consumer.group.rebalance.strategy": "set consumerGroup.rebalanceStrategy on the event instead",
	"consumer.group.rebalance.groupstrategies": "set consumerGroup.rebalanceStrategy on the event instead",
}

// parseKafkaConfig reads a kafka event's config. Every problem is reported, each naming the
// path ("config: consumer.fetch.min: ...") and, for a bad value, the value and what was expected.
func parseKafkaConfig(text string) (*kafkaConfig, error) {
	var doc any
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, fmt.Errorf("config: not YAML: %w", err)
	}
	c := &kafkaConfig{}
	if doc == nil {
		return c, nil
	}
	root, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("config: a %T; expected a YAML mapping of sarama settings such as \"consumer: {fetch: {min: 1}}\"", doc)
	}
	leaves := map[string]configLeaf{}
	var errs []error
	flattenConfig("", "", root, leaves, &errs)
	for _, p := range slices.Sorted(maps.Keys(leaves)) {
		leaf := leaves[p]
		if why, refused := configMatch(kafkaConfigRefused, p); refused {
			errs = append(errs, fmt.Errorf("config: %s: %s", leaf.path, why))
			continue
		}
		if set, ok := kafkaConfigSettings[p]; ok {
			if !set.apply(c, leaf.value) {
				errs = append(errs, fmt.Errorf("config: %s: %s; expected %s", leaf.path, configShow(leaf.value), set.expect))
			}
			continue
		}
		if why, ok := configMatch(kafkaConfigNoEffect, p); ok {
			c.noEffect = append(c.noEffect, leaf.path+" ("+why+")")
			continue
		}
		errs = append(errs, fmt.Errorf("config: %s: not a sarama setting kevents knows; the settings it applies are %s", leaf.path, kafkaConfigKnown()))
	}
	if c.session > 0 && c.heartbeat >= c.session {
		errs = append(errs, fmt.Errorf("config: consumer.group.heartbeat.interval: %s; expected less than consumer.group.session.timeout (%s)", c.heartbeat, c.session))
	}
	if c.session == 0 && c.heartbeat >= 45*time.Second { // franz-go's default session timeout
		errs = append(errs, fmt.Errorf("config: consumer.group.heartbeat.interval: %s; expected less than the session timeout (45s unless consumer.group.session.timeout is set)", c.heartbeat))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// configLeaf is one scalar of the config, with its path as written.
type configLeaf struct {
	path  string
	value any
}

// flattenConfig collects the scalars under m by lower-cased dotted path. A key written twice
// with different cases (viper would keep one of them) is an error.
func flattenConfig(path, lower string, m map[string]any, out map[string]configLeaf, errs *[]error) {
	for k, v := range m {
		p, l := k, strings.ToLower(k)
		if path != "" {
			p, l = path+"."+k, lower+"."+l
		}
		switch sub := v.(type) {
		case map[string]any:
			flattenConfig(p, l, sub, out, errs)
			continue
		case map[any]any:
			*errs = append(*errs, fmt.Errorf("config: %s: a mapping with a key that is not a string; expected sarama's field names", p))
			continue
		}
		if prev, dup := out[l]; dup {
			*errs = append(*errs, fmt.Errorf("config: %s: set twice (also as %s)", p, prev.path))
			continue
		}
		out[l] = configLeaf{path: p, value: v}
	}
}

// configMatch looks p up in a table of paths and path prefixes.
func configMatch(table map[string]string, p string) (string, bool) {
	if why, ok := table[p]; ok {
		return why, true
	}
	for k, why := range table {
		if strings.HasSuffix(k, ".") && strings.HasPrefix(p, k) {
			return why, true
		}
	}
	return "", false
}

// kafkaConfigKnown lists the honoured settings, for errors.
func kafkaConfigKnown() string {
	return strings.Join(slices.Sorted(maps.Keys(kafkaConfigSettings)), ", ")
}

func configShow(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// configInt reads an integer as viper's weak decoding does: a YAML integer, or a string of one.
func configInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

func configBool(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		return b, err == nil
	}
	return false, false
}

// configDuration reads a duration as Argo's viper does: a Go duration string, or an integer of
// nanoseconds.
func configDuration(v any) (time.Duration, bool) {
	if s, ok := v.(string); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(s)); err == nil {
			return d, true
		}
	}
	n, ok := configInt(v)
	return time.Duration(n), ok
}

func durationSetting(lo, hi time.Duration, set func(*kafkaConfig, time.Duration)) kafkaConfigSetting {
	return rangeSetting(lo, hi, configDuration, fmt.Sprintf("a duration from %s to %s, such as \"10s\" (an integer is nanoseconds)", lo, hi), set)
}

func intSetting(lo, hi int64, set func(*kafkaConfig, int64)) kafkaConfigSetting {
	return rangeSetting(lo, hi, configInt, fmt.Sprintf("an integer from %d to %d", lo, hi), set)
}

// rangeSetting is a setting whose value parse reads and that must lie within [lo, hi].
func rangeSetting[T int64 | time.Duration](lo, hi T, parse func(any) (T, bool), expect string, set func(*kafkaConfig, T)) kafkaConfigSetting {
	return kafkaConfigSetting{
		expect: expect,
		apply: func(c *kafkaConfig, v any) bool {
			x, ok := parse(v)
			if !ok || x < lo || x > hi {
				return false
			}
			set(c, x)
			return true
		},
	}
}

func stringSetting(valid *regexp.Regexp, expect string, set func(*kafkaConfig, string)) kafkaConfigSetting {
	return kafkaConfigSetting{
		expect: expect,
		apply: func(c *kafkaConfig, v any) bool {
			s, ok := v.(string)
			if !ok || !valid.MatchString(s) {
				return false
			}
			set(c, s)
			return true
		},
	}
}
