package trigger

import (
	"fmt"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// Resolved is a trigger parameter whose value the sensor resolved from the events. Trigger types
// whose document exists only at execution (a Kubernetes resource read from a file, a URL, a
// ConfigMap or Git, as Argo reads it when the trigger runs) carry their parameters in this form;
// the executor applies them with ApplyResolved.
type Resolved struct {
	// Index is the parameter's position in the trigger's list, for error messages.
	Index int    `json:"index"`
	Dest  string `json:"dest"`
	Value string `json:"value"`
	// Raw means Value is JSON (an object, array, number or bool with useRawData) and is inserted
	// as is; otherwise it is set as a string.
	Raw       bool   `json:"raw,omitempty"`
	Operation string `json:"operation,omitempty"` // "", "overwrite", "append" or "prepend"
}

// ApplyResolved sets each value at its dest in doc, as Argo's ApplyParams does: append and
// prepend join the value to the string already at dest, when there is one.
func ApplyResolved(doc []byte, rs []Resolved) ([]byte, error) {
	var err error
	for _, r := range rs {
		value, raw := r.Value, r.Raw
		switch r.Operation {
		case "append", "prepend":
			if cur := gjson.GetBytes(doc, r.Dest); cur.Exists() {
				raw = false
				if r.Operation == "append" {
					value = cur.String() + value
				} else {
					value += cur.String()
				}
			}
		}
		if raw {
			doc, err = sjson.SetRawBytes(doc, r.Dest, []byte(value))
		} else {
			doc, err = sjson.SetBytes(doc, r.Dest, value)
		}
		if err != nil {
			return nil, fmt.Errorf("parameters[%d].dest %q: %w", r.Index, r.Dest, err)
		}
	}
	return doc, nil
}
