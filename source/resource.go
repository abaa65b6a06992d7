package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/tidwall/gjson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/kevents/kevents/api"
)

// The resource source reports the changes of Kubernetes objects of one resource (Argo's
// resource event source) through a dynamic informer, once in the cluster: the member that owns
// its partition of <prefix>.sources runs the informer and commits the events there (see
// OwnedSource). It needs the Kubernetes API (Env.Kube).
//
// As in Argo, the informer's first list reports every existing object as ADD, on every start
// and so on every takeover, unless filter.afterStart is set. Event ids are derived from the
// object's uid, resourceVersion and the event type, so an ADD reported again by a new owner
// keeps its id. Updates and deletes that happen while no member runs the source (a failover
// takes up to the group's session timeout) are not reported, as in Argo across a restart.
//
// afterStart: Argo compares an event's time with the moment its pod started. Here the source
// records that moment in <prefix>.sources on its first start, and afterwards the time of the
// latest event it committed, and a new owner compares with that: objects created during a
// failover are reported, those already reported are not.
//
// Connection: the informer retries by itself. The event is reported connected
// (kevents_source_connected, readiness) once the first list is in and whenever a watch opens,
// and not connected from a list or watch failing or a request not reaching the API server.
//
// The event data is Argo's ResourceEventData: {"type", "body": the object, "oldBody": the
// previous object of an UPDATE (else null), "group", "version", "resource", "metadata"}.
func init() {
	RegisterOwned("resource", Spec{
		Summary: "Changes (ADD, UPDATE, DELETE) of Kubernetes objects through a dynamic informer, once in the cluster: the member that owns its partition of <prefix>.sources runs it.",
		Check: func(ev api.Event) error {
			r, specErr := specOf[api.ResourceEventSource](ev)
			if specErr != nil {
				return specErr
			}
			_, err := parseResource(r)
			return err
		},
	}, newResource)
}

// Argo's resource event types.
const (
	resourceAdd    = "ADD"
	resourceUpdate = "UPDATE"
	resourceDelete = "DELETE"
)

// resourceMaxPerCommit bounds one transaction, e.g. for the first list of a large resource.
const resourceMaxPerCommit = 500

// resourceEventData is Argo's ResourceEventData.
type resourceEventData struct {
	Type     string            `json:"type"`
	Body     json.RawMessage   `json:"body"`
	OldBody  json.RawMessage   `json:"oldBody"`
	Group    string            `json:"group"`
	Version  string            `json:"version"`
	Resource string            `json:"resource"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// resourceState is what a resource source with afterStart commits: the time events must not
// be older than (to the second, as Kubernetes timestamps are).
type resourceState struct {
	Since time.Time `json:"since"`
}

// resourceField is one field requirement of a filter: a regular expression that the string at
// a gjson path of the object must match (or, negated, must not).
type resourceField struct {
	path   string
	re     *regexp.Regexp
	negate bool
}

// resourceSettings is a resource event's spec, checked and normalised.
type resourceSettings struct {
	gvr        schema.GroupVersionResource
	types      map[string]bool
	labels     string // the label selector of the informer's list and watch
	prefix     string
	fields     []resourceField
	createdBy  time.Time // zero: no limit
	afterStart bool
}

// parseResource validates a resource event and returns its settings. Errors name the field
// (the caller adds spec.resource.<event>), the value and what was expected.
func parseResource(r api.ResourceEventSource) (*resourceSettings, error) {
	var errs []error
	s := &resourceSettings{gvr: schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Resource}, types: map[string]bool{}}
	if r.Version == "" {
		errs = append(errs, errors.New("version: missing; expected the API version of the resource, such as v1"))
	}
	if r.Resource == "" {
		errs = append(errs, errors.New("resource: missing; expected the plural resource name, such as configmaps"))
	}
	if len(r.EventTypes) == 0 {
		errs = append(errs, errors.New("eventTypes: empty; expected one or more of ADD, UPDATE, DELETE"))
	}
	for i, t := range r.EventTypes {
		switch t {
		case resourceAdd, resourceUpdate, resourceDelete:
			s.types[t] = true
		default:
			errs = append(errs, fmt.Errorf("eventTypes[%d]: %q; expected ADD, UPDATE or DELETE", i, t))
		}
	}
	if f := r.Filter; f != nil {
		s.prefix, s.afterStart = f.Prefix, f.AfterStart
		var reqs []labels.Requirement
		for i, l := range f.Labels {
			req, err := resourceLabel(l)
			if err != nil {
				errs = append(errs, fmt.Errorf("filter.labels[%d]: %w", i, err))
				continue
			}
			reqs = append(reqs, *req)
		}
		if len(reqs) > 0 {
			s.labels = labels.NewSelector().Add(reqs...).String()
		}
		for i, fl := range f.Fields {
			field, err := resourceFieldOf(fl)
			if err != nil {
				errs = append(errs, fmt.Errorf("filter.fields[%d]: %w", i, err))
				continue
			}
			s.fields = append(s.fields, field)
		}
		if len(f.CreatedBy) > 0 && string(f.CreatedBy) != "null" {
			var t metav1.Time
			if err := json.Unmarshal(f.CreatedBy, &t); err != nil {
				errs = append(errs, fmt.Errorf("filter.createdBy: %s; expected an RFC 3339 time such as 2024-01-02T15:04:05Z", f.CreatedBy))
			} else {
				s.createdBy = t.Time
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// resourceLabel is Argo's LabelReq: operation defaults to =, in and notin take a
// comma-separated value, exists and ! take none.
func resourceLabel(l api.Selector) (*labels.Requirement, error) {
	if l.Key == "" {
		return nil, errors.New("key: missing; expected a label key")
	}
	op := selection.Equals
	if l.Operation != "" {
		op = selection.Operator(l.Operation)
	}
	var values []string
	switch {
	case (op == selection.Exists || op == selection.DoesNotExist) && l.Value == "":
	case op == selection.In || op == selection.NotIn:
		values = strings.Split(l.Value, ",")
	default:
		values = []string{l.Value}
	}
	req, err := labels.NewRequirement(l.Key, op, values)
	if err != nil {
		return nil, fmt.Errorf("key %q, operation %q, value %q: %w; expected operation =, ==, !=, in, notin, exists, !, gt or lt", l.Key, l.Operation, l.Value, err)
	}
	return req, nil
}

// resourceFieldOf reads a field requirement as Argo's filterFields does. Argo refuses every
// object when the operation is empty; here empty means =, as it does for labels.
func resourceFieldOf(f api.Selector) (resourceField, error) {
	if f.Key == "" {
		return resourceField{}, errors.New("key: missing; expected a path in the object such as metadata.name")
	}
	out := resourceField{path: f.Key}
	switch f.Operation {
	case "", "=", "==":
	case "!=":
		out.negate = true
	default:
		return resourceField{}, fmt.Errorf("operation: %q; expected =, == or !=", f.Operation)
	}
	re, err := regexp.Compile(f.Value)
	if err != nil {
		return resourceField{}, fmt.Errorf("value: %q: %w; expected a Go regular expression", f.Value, err)
	}
	out.re = re
	return out, nil
}

// resourceChange is one informer notification.
type resourceChange struct {
	typ      string
	obj, old *unstructured.Unstructured
}

type resourceSource struct {
	b   Build
	cfg api.ResourceEventSource
	set *resourceSettings
	key string
	log *slog.Logger
}

func newResource(b Build) (OwnedSource, error) {
	cfg, specErr := specOf[api.ResourceEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	if b.Env.Kube == nil {
		return nil, errors.New("no Kubernetes API configured; expected --kubeconfig, $KUBECONFIG or a pod's service account to watch resources through")
	}
	set, err := parseResource(cfg)
	if err != nil {
		return nil, err
	}
	return &resourceSource{b: b, cfg: cfg, set: set, key: ownedKey(b),
		log: b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name, "resource", set.gvr.String(), "namespace", cfg.Namespace)}, nil
}

// RunOwned implements OwnedSource.
func (r *resourceSource) RunOwned(ctx context.Context, state []byte, commit Commit) error {
	env := r.b.Env
	ns, es, name := r.b.EventSource.Metadata.Namespace, r.b.EventSource.Metadata.Name, r.b.Event.Name
	health := newSourceHealth(ctx, r.b)
	defer health.stop()
	client, err := dynamic.NewForConfig(resourceHealthConfig(env.Kube, health))
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	// Kubernetes timestamps are whole seconds: an object created in the second the source
	// started counts as created after it.
	since := time.Now().UTC().Truncate(time.Second)
	if r.set.afterStart {
		var st resourceState
		if state != nil && json.Unmarshal(state, &st) == nil && !st.Since.IsZero() {
			since = st.Since
		} else if err := commit(ctx, nil, r.state(since)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("record the start: %w", err)
		}
	}

	informCtx, cancel := context.WithCancel(ctx)
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, r.cfg.Namespace, func(o *metav1.ListOptions) {
		o.LabelSelector = r.set.labels
	})
	defer func() {
		cancel()
		factory.Shutdown() // waits for the informer's goroutines
	}()
	inf := factory.ForResource(r.set.gvr).Informer()
	// Watch errors (a resource the cluster does not serve, missing RBAC) are retried by the
	// informer with backoff; they are logged here rather than by klog.
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		r.log.Warn("resource: cannot list or watch; retrying", "err", err)
		health.set(fmt.Errorf("list or watch %s: %w", r.set.gvr.String(), err))
	})
	changes := make(chan resourceChange, 1024)
	send := func(c resourceChange) {
		select {
		case changes <- c:
		case <-informCtx.Done():
		}
	}
	var h cache.ResourceEventHandlerFuncs
	if r.set.types[resourceAdd] {
		h.AddFunc = func(obj any) {
			if u, ok := obj.(*unstructured.Unstructured); ok {
				send(resourceChange{typ: resourceAdd, obj: u})
			}
		}
	}
	if r.set.types[resourceUpdate] {
		h.UpdateFunc = func(oldObj, newObj any) {
			u, ok1 := newObj.(*unstructured.Unstructured)
			o, ok2 := oldObj.(*unstructured.Unstructured)
			if ok1 && ok2 && u.GetResourceVersion() != o.GetResourceVersion() {
				send(resourceChange{typ: resourceUpdate, obj: u, old: o})
			}
		}
	}
	if r.set.types[resourceDelete] {
		h.DeleteFunc = func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj // the delete was missed while the watch was down; this is the last known state
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				send(resourceChange{typ: resourceDelete, obj: u})
			}
		}
	}
	if _, err := inf.AddEventHandler(h); err != nil {
		return fmt.Errorf("informer: %w", err)
	}
	factory.Start(informCtx.Done())
	go func() {
		// Once the first list is in, the API server answered (the watch reports from then on).
		// Polled as cache.WaitForCacheSync does, without its klog lines.
		for !inf.HasSynced() {
			select {
			case <-informCtx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		health.set(nil)
	}()
	r.log.Info("resource: watching", "afterStart", r.set.afterStart, "since", since, "labels", r.set.labels)
	// The running owner filters against since; the next owner against the latest event
	// committed, so that it reports only what this one did not.
	watermark := since

	for {
		var batch []resourceChange
		select {
		case <-ctx.Done():
			return nil
		case c := <-changes:
			batch = append(batch, c)
		}
		batch = drainReady(batch, changes, resourceMaxPerCommit)
		var events []cloudevents.Event
		latest := watermark
		for _, c := range batch {
			at := resourceEventTime(c)
			if !r.set.passes(c, at, since) {
				continue
			}
			e, err := r.event(c)
			if err != nil {
				r.log.Error("resource: cannot encode the object; dropped", "object", c.obj.GetNamespace()+"/"+c.obj.GetName(), "err", err)
				continue
			}
			events = append(events, e)
			if at.After(latest) {
				latest = at
			}
		}
		if len(events) == 0 {
			continue
		}
		var newState []byte
		if r.set.afterStart {
			newState = r.state(latest)
		}
		env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(events)))
		if err := commit(ctx, events, newState); err != nil {
			env.Metrics.PublishFailed(ns, es, name, len(events))
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		env.Metrics.Published(ns, es, name, len(events))
		watermark = latest
	}
}

// resourceHealthConfig is cfg with a transport that reports the informer's connection to
// health: connected when a watch request is answered 2xx (the watch is open), not connected when
// a request fails to reach the API server. The informer's watch error handler sees list
// failures and refused watches, but a watch that cannot reach the server is retried inside
// client-go's reflector without it, for as long as the server is away.
func resourceHealthConfig(cfg *rest.Config, health *sourceHealth) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return resourceHealthTransport{next: rt, health: health}
	})
	return cfg
}

type resourceHealthTransport struct {
	next   http.RoundTripper
	health *sourceHealth
}

func (t resourceHealthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	switch {
	case err != nil:
		if req.Context().Err() == nil { // not a stop
			// err names the API server's address, never credentials (they travel in headers).
			t.health.set(fmt.Errorf("cannot reach the Kubernetes API: %w", err))
		}
	case resp.StatusCode/100 == 2 && req.URL.Query().Get("watch") != "":
		t.health.set(nil)
	}
	return resp, err
}

// state encodes since to the second, down: an object created later in that second has an
// earlier creationTimestamp.
func (r *resourceSource) state(since time.Time) []byte {
	b, _ := json.Marshal(resourceState{Since: since.UTC().Truncate(time.Second)}) // a time always encodes
	return b
}

// passes applies the filter as Argo's passFilters does; at is the event's time.
func (s *resourceSettings) passes(c resourceChange, at, since time.Time) bool {
	obj := c.obj
	if s.prefix != "" && !strings.HasPrefix(obj.GetName(), s.prefix) {
		return false
	}
	if s.afterStart && at.Before(since) {
		return false
	}
	if created := obj.GetCreationTimestamp(); !s.createdBy.IsZero() && created.After(s.createdBy) {
		return false
	}
	if len(s.fields) > 0 {
		raw, err := obj.MarshalJSON()
		if err != nil {
			return false
		}
		for _, f := range s.fields {
			v := gjson.GetBytes(raw, f.path)
			if !v.Exists() || f.re.MatchString(v.Str) == f.negate {
				return false
			}
		}
	}
	return true
}

// resourceEventTime is Argo's getEventTime: creation for ADD, deletion (else now) for DELETE,
// and for UPDATE the latest write in managedFields (Argo counts Update entries only; server-side
// Apply writes count here too).
func resourceEventTime(c resourceChange) time.Time {
	obj := c.obj
	switch c.typ {
	case resourceDelete:
		if d := obj.GetDeletionTimestamp(); d != nil {
			return d.Time
		}
		return time.Now()
	case resourceUpdate:
		t := obj.GetCreationTimestamp().Time
		for _, f := range obj.GetManagedFields() {
			if f.Time != nil && (f.Operation == metav1.ManagedFieldsOperationUpdate || f.Operation == metav1.ManagedFieldsOperationApply) && f.Time.After(t) {
				t = f.Time.Time
			}
		}
		return t
	}
	return obj.GetCreationTimestamp().Time
}

func (r *resourceSource) event(c resourceChange) (cloudevents.Event, error) {
	body, err := c.obj.MarshalJSON()
	if err != nil {
		return cloudevents.Event{}, err
	}
	d := resourceEventData{Type: c.typ, Body: body, Group: r.cfg.Group, Version: r.cfg.Version, Resource: r.cfg.Resource, Metadata: r.cfg.Metadata}
	if c.old != nil {
		if d.OldBody, err = c.old.MarshalJSON(); err != nil {
			return cloudevents.Event{}, err
		}
	}
	sum := sha256.Sum256([]byte(r.key + "|" + c.typ + "|" + string(c.obj.GetUID()) + "|" + c.obj.GetResourceVersion()))
	return r.b.NewEvent(hex.EncodeToString(sum[:16]), time.Now().UTC(), d)
}
