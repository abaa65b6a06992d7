package cloudevent

import (
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/tidwall/gjson"

	"github.com/kevents/kevents/internal/jsonw"
)

// FromJSON decodes an event in the CloudEvents JSON format, with the result of
// (*event.Event).UnmarshalJSON. The shape kevents itself writes (specversion 1.0, the core
// attributes as strings, JSON data) is read directly: the SDK's reader was the largest part of
// firing a join. Anything else (extensions, data_base64, dataschema, other media types, other
// spec versions, malformed input) goes to the SDK, which also words the errors.
// TestFromJSONMatchesSDK holds both paths to the same result.
func FromJSON(raw []byte) (*event.Event, error) {
	if e, ok := fromJSONV1(raw); ok {
		return e, nil
	}
	e := event.New()
	if err := e.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	return &e, nil
}

// fromJSONV1 is FromJSON's direct path; ok false leaves raw to the SDK.
func fromJSONV1(raw []byte) (e *event.Event, ok bool) {
	if !gjson.ValidBytes(raw) {
		return nil, false
	}
	root := gjson.ParseBytes(raw)
	if !root.IsObject() {
		return nil, false
	}
	// The event, its context and its time in one allocation.
	d := &struct {
		e    event.Event
		ec   event.EventContextV1
		time types.Timestamp
	}{}
	ec := &d.ec
	var (
		data     gjson.Result
		versions int
	)
	ok = true
	root.ForEach(func(k, v gjson.Result) bool {
		if k.Str != "data" && v.Type != gjson.String {
			ok = false
			return false
		}
		switch k.Str {
		case "specversion":
			versions++
			ok = v.Str == event.CloudEventsVersionV1 && versions == 1
		case "id":
			ec.ID = v.Str
		case "type":
			ec.Type = v.Str
		case "source":
			// The SDK rejects an empty source here, where the binary binding accepts one.
			ok = v.Str != ""
			if ok {
				_, err := setSource(ec, []byte(v.Str))
				ok = err == nil
			}
		case "subject":
			ec.Subject = nonEmpty(v.Str)
		case "datacontenttype":
			ec.DataContentType = nonEmpty(v.Str)
		case "time":
			// As types.ParseTimestamp, without allocating the timestamp on its own.
			if v.Str != "" {
				t, err := parseTime(v.Str)
				ok = err == nil
				d.time.Time = t
				ec.Time = &d.time
			}
		case "data":
			data = v
		default:
			ok = false
		}
		return ok
	})
	if !ok || versions != 1 {
		return nil, false
	}
	if data.Exists() {
		if ec.DataContentType != nil && *ec.DataContentType != event.ApplicationJSON {
			return nil, false
		}
		// The SDK keeps the data's bytes from just after the colon, whitespace included.
		start := data.Index
		for start > 0 && raw[start-1] != ':' {
			start--
		}
		if start == 0 {
			return nil, false
		}
		d.e.DataEncoded = append([]byte(nil), raw[start:data.Index+len(data.Raw)]...)
	}
	d.e.Context = ec
	return &d.e, true
}

// nonEmpty is how the SDK's JSON reader stores an optional string attribute.
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// AppendJSON appends e in the CloudEvents JSON format, as e.MarshalJSON writes it: the shape
// FromJSON reads directly (spec version 1.0, no extensions or dataschema, JSON data not in
// base64) is written here, the SDK's writer having been a tenth of matching an event for a
// join; anything else goes to the SDK. TestAppendJSONMatchesSDK holds both to the same event.
func AppendJSON(b []byte, e *event.Event) ([]byte, error) {
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok || len(ec.Extensions) > 0 || ec.DataSchema != nil || e.DataBase64 ||
		(ec.DataContentType != nil && *ec.DataContentType != event.ApplicationJSON) {
		raw, err := e.MarshalJSON()
		return append(b, raw...), err
	}
	b = append(b, `{"specversion":"1.0","id":`...)
	b = jsonw.AppendString(b, ec.ID)
	b = append(b, `,"source":`...)
	b = jsonw.AppendString(b, Source(e))
	b = append(b, `,"type":`...)
	b = jsonw.AppendString(b, ec.Type)
	if ec.Subject != nil {
		b = append(b, `,"subject":`...)
		b = jsonw.AppendString(b, *ec.Subject)
	}
	if ec.DataContentType != nil {
		b = append(b, `,"datacontenttype":`...)
		b = jsonw.AppendString(b, *ec.DataContentType)
	}
	if ec.Time != nil {
		b = append(b, `,"time":"`...)
		b = jsonw.AppendTime(b, ec.Time.Time.UTC())
		b = append(b, '"')
	}
	// As the SDK: JSON data is written as it is, unchecked.
	if e.DataEncoded != nil {
		b = append(b, `,"data":`...)
		b = append(b, e.DataEncoded...)
	}
	return append(b, '}'), nil
}
