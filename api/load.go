package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrNotSupported marks a definition kevents reads but cannot run yet. Callers branch on it with
// errors.Is to tell "not supported yet" apart from a mistake in the definition.
var ErrNotSupported = errors.New("not supported yet")

// NotSupported returns an error wrapping ErrNotSupported, e.g. `not supported yet: eventsource
// type "sqs"`.
func NotSupported(what, name string) error {
	return fmt.Errorf("%w: %s %q", ErrNotSupported, what, name)
}

// Document is one YAML document of a definitions file, loaded or refused.
type Document struct {
	File  string // path as given
	Index int    // 1-based position of the document in its file
	Line  int    // line where the document starts
	Kind  string
	Name  string
	// Exactly one of EventSource, Sensor is set when Err is nil and Skipped is empty.
	EventSource *EventSource
	Sensor      *Sensor
	// Skipped says why a well-formed document of another kind (a WorkflowTemplate beside a
	// Sensor, say) was passed over.
	Skipped string
	Err     error
}

// String names the document for messages: "file.yaml#2 Sensor/webhook".
func (d Document) String() string {
	s := fmt.Sprintf("%s#%d", d.File, d.Index)
	if d.Kind != "" {
		s += " " + d.Kind
		if d.Name != "" {
			s += "/" + d.Name
		}
	}
	return s
}

// LoadPaths reads every .yaml, .yml and .json file under the given files and folders (folders
// recursively, in lexical order). The error is for paths that cannot be read at all; problems
// in a document are reported on that document.
func LoadPaths(paths ...string) ([]Document, error) {
	var docs []Document
	for _, p := range paths {
		files, err := definitionFiles(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read definitions: %w", err)
			}
			docs = append(docs, Parse(f, data)...)
		}
	}
	return docs, nil
}

func definitionFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("definitions path %q: %w", path, err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != path && strings.HasPrefix(d.Name(), "..") {
			// A mounted ConfigMap or Secret keeps its files in a hidden ..<timestamp> folder
			// and links them from the top; reading both would load every definition twice.
			return filepath.SkipDir
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("definitions folder %q: %w", path, err)
	}
	sort.Strings(files)
	return files, nil
}

// Parse splits data into YAML documents and loads each strictly. Empty documents are dropped.
func Parse(file string, data []byte) []Document {
	var docs []Document
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 1; ; i++ {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			return docs
		}
		d := Document{File: file, Index: i}
		if err != nil {
			// The YAML stream is broken: nothing after this point can be trusted.
			d.Err = fmt.Errorf("%s: invalid YAML: %w", d, err)
			return append(docs, d)
		}
		if len(root.Content) == 0 || (root.Content[0].Kind == yaml.ScalarNode && root.Content[0].Tag == "!!null") {
			continue
		}
		d.Line = root.Content[0].Line
		loadDocument(&d, root.Content[0])
		docs = append(docs, d)
	}
}

func loadDocument(d *Document, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		d.Err = fmt.Errorf("%s (line %d): expected a mapping with apiVersion and kind, got %s", d, n.Line, nodeKind(n))
		return
	}
	var head struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
	}
	_ = n.Decode(&head) // mistyped fields are reported by the strict walk below
	d.Kind, d.Name = head.Kind, head.Metadata.Name

	var target any
	switch head.Kind {
	case KindEventSource:
		d.EventSource = &EventSource{}
		target = d.EventSource
	case KindSensor:
		d.Sensor = &Sensor{}
		target = d.Sensor
	case "":
		d.Err = fmt.Errorf("%s (line %d): kind: missing; expected %s or %s", d, n.Line, KindEventSource, KindSensor)
		return
	default:
		d.Skipped = fmt.Sprintf("kind %s is not an %s or %s", head.Kind, KindEventSource, KindSensor)
		return
	}
	switch head.APIVersion {
	case ArgoAPIVersion, KeventsAPIVersion:
	default:
		d.Err = fmt.Errorf("%s (line %d): apiVersion: %q; expected %s or %s", d, n.Line, head.APIVersion, ArgoAPIVersion, KeventsAPIVersion)
		d.EventSource, d.Sensor = nil, nil
		return
	}

	var errs []error
	checkNode(n, reflect.TypeOf(target).Elem(), "", nil, &errs)
	if len(errs) == 0 {
		errs = append(errs, decodeInto(n, target))
	}
	if err := errors.Join(errs...); err != nil {
		d.Err = fmt.Errorf("%s: %w", d, err)
		d.EventSource, d.Sensor = nil, nil
		return
	}
	if d.EventSource != nil {
		err := d.EventSource.Validate()
		if err != nil {
			d.Err = fmt.Errorf("%s: %w", d, err)
			d.EventSource = nil
		}
		return
	}
	if err := d.Sensor.Validate(); err != nil {
		d.Err = fmt.Errorf("%s: %w", d, err)
		d.Sensor = nil
	}
}

// decodeInto goes YAML → generic value → JSON → typed value, so the json tags are the one schema.
func decodeInto(n *yaml.Node, target any) error {
	var generic any
	if err := n.Decode(&generic); err != nil {
		return err
	}
	raw, err := json.Marshal(jsonCompatible(generic))
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, target)
}

// jsonCompatible turns yaml.v3's map[string]any trees (which may hold map[any]any for non-string
// keys) into values encoding/json accepts.
func jsonCompatible(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = jsonCompatible(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = jsonCompatible(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = jsonCompatible(e)
		}
		return t
	}
	return v
}

var opaqueType = reflect.TypeOf(Opaque{})

// checkNode walks n against the Go type t (through its json tags) and records every unknown
// field and every value of the wrong shape, each with its path and line. parent is the struct
// type that holds t, used to say when a field is misplaced (it belongs one level up).
func checkNode(n *yaml.Node, t reflect.Type, path string, parent reflect.Type, errs *[]error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t == opaqueType {
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bad := func(expected string) {
		*errs = append(*errs, fmt.Errorf("line %d: %s: expected %s, got %s", n.Line, display(path), expected, nodeKind(n)))
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("a mapping")
			return
		}
		fields := jsonFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			f, ok := fields[key.Value]
			if !ok {
				*errs = append(*errs, unknownField(key, path, fields, parent))
				continue
			}
			checkNode(val, f.Type, join(path, key.Value), t, errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad("a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkNode(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), nil, errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("a list")
			return
		}
		for i, item := range n.Content {
			checkNode(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), nil, errs)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			if n.Kind == yaml.ScalarNode {
				bad(fmt.Sprintf("a string (quote it: %q)", n.Value))
				return
			}
			bad("a string")
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			bad("true or false")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			bad("an integer")
		}
	}
}

func unknownField(key *yaml.Node, path string, fields map[string]reflect.StructField, parent reflect.Type) error {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	msg := fmt.Sprintf("line %d: %s: unknown field; expected one of: %s", key.Line, display(join(path, key.Value)), strings.Join(names, ", "))
	for _, name := range names {
		if strings.EqualFold(name, key.Value) {
			msg += fmt.Sprintf(" (did you mean %q? field names are case-sensitive)", name)
		}
	}
	if parent != nil {
		if _, ok := jsonFields(parent)[key.Value]; ok {
			msg += fmt.Sprintf(" (misplaced: %q belongs one level up, in %s)", key.Value, display(parentPath(path)))
		}
	}
	return errors.New(msg)
}

// jsonFields maps the json names of t's fields to the fields.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	m := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		m[name] = f
	}
	return m
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func parentPath(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

func display(path string) string {
	if path == "" {
		return "the document"
	}
	return path
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%s %q", strings.TrimPrefix(n.Tag, "!!"), n.Value)
	}
	return "an empty document"
}
