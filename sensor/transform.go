package sensor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/itchyny/gojq"
	lua "github.com/yuin/gopher-lua"

	"github.com/kevents/kevents/api"
)

// transformer is a compiled dependency `transform`: a jq program (gojq) or a Lua script,
// compiled once at load time, that rewrites the data of each event before the filters run.
// apply is safe for concurrent use.
type transformer struct {
	path    string
	jqSrc   string
	jq      *gojq.Code
	script  *luaProgram
	timeout time.Duration // of a jq run; a script has its own
}

// compileTransform compiles a dependency's transform. path names the field in errors
// ("spec.dependencies[0] (a).transform"). A nil t, or one with neither jq nor script, is no
// transform: nil, nil. A jq program that does not parse or compile (also one that reads
// input or inputs) or a Lua script that does not parse is a load error naming the field and
// the offending text. Setting both jq and script is an error: Argo documents "not both" but
// does not check it, and runs only the jq program.
func compileTransform(path string, t *api.EventDependencyTransformer) (*transformer, error) {
	if t == nil || (t.JQ == "" && t.Script == "") {
		return nil, nil
	}
	if t.JQ != "" && t.Script != "" {
		return nil, fmt.Errorf("%s: jq and script are both set; set one of them", path)
	}
	tr := &transformer{path: path, timeout: scriptTimeout}
	if t.JQ != "" {
		q, err := gojq.Parse(t.JQ)
		if err != nil {
			return nil, fmt.Errorf("%s.jq: %q is not a valid jq program: %w", path, t.JQ, err)
		}
		// No environment loader: env and $ENV are {} and do not leak the process environment.
		code, err := gojq.Compile(q)
		if err != nil {
			return nil, fmt.Errorf("%s.jq: %q: %w", path, t.JQ, err)
		}
		tr.jqSrc, tr.jq = t.JQ, code
		return tr, nil
	}
	prog, err := compileLua(path+".script", t.Script)
	if err != nil {
		return nil, err
	}
	tr.script = prog
	return tr, nil
}

// apply transforms e's data with Argo's semantics and returns a new event: a copy of e (same
// context and extensions) whose data is the transformed JSON, with content type
// application/json. It never modifies e.
//
//   - An event without data is returned unchanged (as a copy).
//   - The data must be JSON, and a JSON object or null (seen as {}); anything else is an error.
//   - jq: the program gets the data object as input; its first output must be an object and
//     becomes the data; further outputs are ignored; no output, or an error, is an error.
//     Numbers keep their precision: integers beyond 2^53 survive (Argo decodes to float64).
//   - script: the data is the global table `event`; the last value the script returns must be
//     a table, which becomes the data (a JSON object, or an array, see luaToGo).
//   - A run longer than scriptTimeout is an error.
//
// A nil *transformer returns e itself. apply is safe for concurrent use.
func (t *transformer) apply(e *cloudevents.Event) (*cloudevents.Event, error) {
	if t == nil {
		return e, nil
	}
	if e == nil || e.Context == nil {
		return nil, fmt.Errorf("%s: nil event", t.path)
	}
	data := e.Data()
	if len(data) == 0 {
		out := e.Clone()
		return &out, nil
	}
	var (
		result []byte
		err    error
	)
	if t.jq != nil {
		result, err = t.applyJQ(data)
	} else {
		result, err = t.applyScript(data)
	}
	if err != nil {
		return nil, err
	}
	out := e.Clone()
	out.SetDataContentType(cloudevents.ApplicationJSON)
	out.DataEncoded = result
	out.DataBase64 = false
	return &out, nil
}

func (t *transformer) applyJQ(data []byte) ([]byte, error) {
	path := t.path + ".jq"
	if _, err := jsonObject(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var input any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&input); err != nil {
		return nil, fmt.Errorf("%s: event data: %w", path, err)
	}
	if input == nil {
		input = map[string]any{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	v, ok := t.jq.RunWithContext(ctx, input).Next()
	if !ok {
		return nil, fmt.Errorf("%s: %q produced no output; it must produce a JSON object", path, t.jqSrc)
	}
	if err, isErr := v.(error); isErr {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s: %q ran longer than %s and was stopped", path, t.jqSrc, t.timeout)
		}
		return nil, fmt.Errorf("%s: %q: %w", path, t.jqSrc, err)
	}
	obj, isObj := v.(map[string]any)
	if !isObj {
		return nil, fmt.Errorf("%s: %q produced %s; it must produce a JSON object", path, t.jqSrc, jqKind(v))
	}
	out, err := marshalJSON(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %q: output: %w", path, t.jqSrc, err)
	}
	return out, nil
}

func (t *transformer) applyScript(data []byte) ([]byte, error) {
	var out []byte
	err := t.script.run(data, func(ret lua.LValue, n int) error {
		if n == 0 {
			return errors.New("the script returned nothing; it must return a table (return event)")
		}
		if _, ok := ret.(*lua.LTable); !ok {
			return fmt.Errorf("the script returned %s; it must return a table (return event)", luaDescribe(ret))
		}
		v, err := luaToGo(ret)
		if err != nil {
			return err
		}
		out, err = marshalJSON(v)
		return err
	})
	return out, err
}

// marshalJSON is json.Marshal without HTML escaping: object keys sorted, as Argo's output.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func jqKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case int, float64, *big.Int, json.Number:
		return "a number"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}
