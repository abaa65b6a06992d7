// Package cloudevent encodes CloudEvents on franz-go records following the
// CloudEvents Kafka protocol binding, and decodes them back.
//
// ToRecord always writes binary content mode: every context attribute is a
// "ce_<name>" header (ce_specversion, ce_id, ce_source, ce_type, ce_dataschema,
// ce_subject, ce_time, and one ce_<name> header per extension), datacontenttype
// is the "content-type" header and the event data is the record value, unchanged.
// FromRecord reads binary content mode and structured content mode
// (content-type application/cloudevents+json).
//
// Both directions go through cloudevents/sdk-go's binding package
// (binding.Write with a binding.BinaryWriter onto the record, binding.ToEvent from
// a binding.MessageReader over the record), so the wire format is the one of the
// SDK's own Kafka binding, kafka_sarama; a test checks it against kafka_sarama
// both ways through a broker.
//
// Both functions are on the hot path and avoid copies: the record returned by
// ToRecord shares its value with the event's data, and the event returned by
// FromRecord shares its data with the record's value (see each function).
package cloudevent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kevents/kevents/internal/jsonw"
)

const (
	// headerPrefix prefixes every attribute header in binary content mode.
	headerPrefix = "ce_"
	// contentTypeHeader carries datacontenttype in binary content mode and the
	// event format's media type in structured content mode.
	contentTypeHeader = "content-type"
	specVersionHeader = headerPrefix + "specversion"
	// partitionKeyExtension is the Kafka binding's key mapping extension.
	partitionKeyExtension = "partitionkey"
)

// ErrNotCloudEvent is wrapped by the error FromRecord returns for a record that
// carries no CloudEvent: neither a ce_specversion header (binary content mode)
// nor a content-type header naming a CloudEvents event format (structured
// content mode). It is also wrapped when ce_specversion names a version this
// SDK does not know, and for batched content (application/cloudevents-batch+json),
// which the Kafka binding does not define. Test it with errors.Is.
var ErrNotCloudEvent = errors.New("cloudevent: record is not a CloudEvent")

// specs resolves "ce_"-prefixed header names to attributes of each spec version.
var specs = spec.WithPrefix(headerPrefix)

// ToRecord encodes e in binary content mode onto a new record for topic with the
// given key: attributes as "ce_<name>" headers (ce_specversion, ce_id, ce_source,
// ce_type, ce_dataschema, ce_subject, ce_time, one ce_<name> per extension),
// datacontenttype as the "content-type" header, data as the value.
//
// Contract:
//   - e must be a valid CloudEvent (e.Validate); otherwise ToRecord returns an
//     error and no record.
//   - ce_time is RFC 3339 in UTC with as many fractional-second digits as needed
//     (time.RFC3339Nano), exactly as the SDK's bindings write it. Extension values
//     are written in their CloudEvents canonical string form (types.Format):
//     integers in decimal, booleans as true/false, binary as base64, timestamps
//     as ce_time.
//   - Attribute headers come first, in the order of the spec version's
//     attributes in the binding package (for 1.0: id, source, specversion, type,
//     content-type, dataschema, subject, time; absent ones are left out), then
//     one header per extension in no particular order.
//   - A non-nil key is used as is. A nil key takes the value of the
//     "partitionkey" extension if e has one (the Kafka binding's key mapping, as
//     kafka_sarama does by default); otherwise the record has no key.
//   - The record's Value is e.Data() itself, not a copy: do not modify the
//     event's data until the record has been produced. A record without data
//     has a nil Value.
//   - Topic, Key, Headers and Value are the only fields set; ctx is passed to
//     the binding and is not otherwise used.
func ToRecord(ctx context.Context, e event.Event, topic string, key []byte) (*kgo.Record, error) {
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("cloudevent: invalid event: %w", err)
	}
	w := newRecordWriter(topic, key)
	if _, err := binding.Write(ctx, (*binding.EventMessage)(&e), nil, w); err != nil {
		return nil, fmt.Errorf("cloudevent: encoding event %q: %w", e.ID(), err)
	}
	return &w.rec, nil
}

// FromRecord decodes a record written in binary mode (ce_ headers) or structured
// mode (content-type application/cloudevents+json) into an event. A record that
// is not a CloudEvent returns an error wrapping ErrNotCloudEvent.
//
// Contract:
//   - Structured content mode wins when the content-type header names a
//     CloudEvents format, as in the SDK's bindings; otherwise a ce_specversion
//     header selects binary content mode. Anything else wraps ErrNotCloudEvent.
//   - Header names are matched case-insensitively; when a header is repeated,
//     the last one wins. Headers other than ce_* and content-type are ignored.
//   - In binary mode, ce_<name> headers that are not attributes of the spec
//     version become extensions with string values (the Kafka binding carries no
//     types; use the types package to convert them). The record's topic,
//     partition and offset are not added as extensions.
//   - The decoded event must be valid (event.Validate): a record in CloudEvents
//     form with, say, no ce_id or a malformed ce_time returns an error that does
//     not wrap ErrNotCloudEvent.
//   - In binary mode the event's data is r.Value itself, not a copy: copy it
//     before reusing or recycling the record (kgo.Record.Recycle) if the event
//     outlives it. An empty or nil value gives an event without data.
func FromRecord(r *kgo.Record) (*event.Event, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: nil record", ErrNotCloudEvent)
	}
	var structured format.Format
	var contentType, specVersion []byte
	var hasContentType, hasSpecVersion bool
	for i := range r.Headers {
		h := &r.Headers[i]
		// Shorter names cannot match (letters that fold to ASCII are longer), and most of a
		// record's headers are shorter: they skip the calls.
		switch {
		case len(h.Key) >= len(contentTypeHeader) && strings.EqualFold(h.Key, contentTypeHeader):
			contentType, hasContentType = h.Value, true
		case len(h.Key) >= len(specVersionHeader) && strings.EqualFold(h.Key, specVersionHeader):
			specVersion, hasSpecVersion = h.Value, true
		}
	}
	// Only the SDK's formats are registered (kevents adds none), and all of them are
	// application/cloudevents…: other content types, nearly every record's, skip the lookup.
	if ct := bytes.TrimSpace(contentType); hasContentType && len(ct) >= len(structuredPrefix) && strings.EqualFold(string(ct[:len(structuredPrefix)]), structuredPrefix) {
		// format.Lookup takes a string; the conversion in the call does not
		// allocate since the result does not escape.
		structured = format.Lookup(string(contentType))
	}
	if structured == nil && hasSpecVersion && string(specVersion) == event.CloudEventsVersionV1 {
		if e, ok, err := fromBinaryV1(r); ok {
			return e, err
		}
	}
	// Made only off the fast path: the binding makes it escape to the heap.
	m := &recordMessage{rec: r, format: structured}
	switch {
	case m.format != nil:
		if m.format.MediaType() == event.ApplicationCloudEventsBatchJSON {
			return nil, fmt.Errorf("%w: batched content mode (%s) is not part of the Kafka binding", ErrNotCloudEvent, contentType)
		}
	case hasSpecVersion:
		if m.version = specs.Version(string(specVersion)); m.version == nil {
			return nil, fmt.Errorf("%w: unknown ce_specversion %q", ErrNotCloudEvent, specVersion)
		}
	default:
		return nil, fmt.Errorf("%w: no ce_specversion header and no CloudEvents content-type", ErrNotCloudEvent)
	}
	e, err := binding.ToEvent(context.Background(), m)
	if err != nil {
		return nil, fmt.Errorf("cloudevent: decoding record (topic %q, partition %d, offset %d): %w", r.Topic, r.Partition, r.Offset, err)
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("cloudevent: invalid event in record (topic %q, partition %d, offset %d): %w", r.Topic, r.Partition, r.Offset, err)
	}
	return e, nil
}

// structuredPrefix begins the media type of every CloudEvents format (structured content mode).
const structuredPrefix = "application/cloudevents"

// fromBinaryV1 decodes the common case, a CloudEvents 1.0 record in binary content mode with
// lower-case header names, straight into an event context: the same setters the binding calls,
// without its per-attribute interface conversions, which were most of the sensor's decoding
// time. It reports ok false, leaving the record to the binding, for anything else (an
// upper-case header name, a ce_ header naming an attribute of another spec version).
// TestFromRecordFastPathMatchesBinding holds both paths to the same result.
func fromBinaryV1(r *kgo.Record) (e *event.Event, ok bool, err error) {
	// The event, its context and its time in one allocation.
	d := &struct {
		e    event.Event
		ec   event.EventContextV1
		time types.Timestamp
	}{}
	ec := &d.ec
	sourceNonBlank := false
	fail := func(key string, err error) (*event.Event, bool, error) {
		return nil, true, fmt.Errorf("cloudevent: decoding record (topic %q, partition %d, offset %d): header %s: %w", r.Topic, r.Partition, r.Offset, key, err)
	}
	for i := range r.Headers {
		h := &r.Headers[i]
		if h.Key == contentTypeHeader {
			ec.DataContentType = interned(h.Value)
			continue
		}
		if !strings.HasPrefix(h.Key, headerPrefix) {
			if strings.EqualFold(h.Key, contentTypeHeader) || (len(h.Key) > len(headerPrefix) && strings.EqualFold(h.Key[:len(headerPrefix)], headerPrefix)) {
				return nil, false, nil
			}
			continue
		}
		var err error
		switch name := h.Key[len(headerPrefix):]; name {
		case "specversion":
		case "id":
			err = ec.SetID(string(h.Value))
		case "source":
			sourceNonBlank, err = setSource(ec, h.Value)
		case "type":
			// As SetType, shared like the subject: a topic's events have a handful of types.
			ec.Type = ""
			if p := interned(h.Value); p != nil {
				ec.Type = *p
			}
		case "subject":
			ec.Subject = interned(h.Value)
		case "dataschema":
			err = ec.SetDataSchema(string(h.Value))
		case "time":
			// As SetTime, which would allocate the timestamp on its own.
			var t time.Time
			if t, err = parseTime(h.Value); err == nil {
				ec.Time = nil
				if !t.IsZero() {
					d.time.Time = t
					ec.Time = &d.time
				}
			}
		case "datacontenttype", "schemaurl", "datacontentencoding":
			return nil, false, nil
		default:
			if strings.ToLower(name) != name {
				return nil, false, nil
			}
			err = ec.SetExtension(name, string(h.Value))
		}
		if err != nil {
			return fail(h.Key, err)
		}
	}
	out := &d.e
	out.Context = ec
	if len(r.Value) > 0 {
		out.DataEncoded = r.Value
	}
	// Validate allocates for every event; it runs only when the cheap check cannot vouch for
	// the event, to produce its message.
	if !validV1(ec, sourceNonBlank) {
		if err := out.Validate(); err != nil {
			return nil, true, fmt.Errorf("cloudevent: invalid event in record (topic %q, partition %d, offset %d): %w", r.Topic, r.Partition, r.Offset, err)
		}
	}
	return out, true, nil
}

// internedValues caches content-type, ce_type and ce_subject values (a topic's events share a
// handful) as the trimmed strings their setters would store, so that events share one string
// instead of allocating per attribute. Sharing is safe: the setters replace these pointers,
// never write through them.
var internedValues valueCache[*string] // header value → trimmed, nil when blank

// interned is what SetDataContentType and SetSubject store for v: nil when v is blank.
func interned(v []byte) *string {
	if p, ok := internedValues.get(v); ok {
		return p
	}
	var p *string
	if s := strings.TrimSpace(string(v)); s != "" {
		p = &s
	}
	return internedValues.add(string(v), p)
}

// validV1 reports true only for a context EventContextV1.Validate accepts: the required
// attributes non-blank, subject non-blank when present, a media type already seen to parse, no
// dataschema (rare; left to Validate). False means "ask Validate", not "invalid".
func validV1(ec *event.EventContextV1, sourceNonBlank bool) bool {
	if strings.TrimSpace(ec.ID) == "" || strings.TrimSpace(ec.Type) == "" || ec.DataSchema != nil {
		return false
	}
	if ec.Subject != nil && strings.TrimSpace(*ec.Subject) == "" {
		return false
	}
	if ec.DataContentType != nil && !knownMediaType(*ec.DataContentType) {
		return false
	}
	return sourceNonBlank
}

// mediaTypes caches datacontenttype values that parse as RFC 2046 media types.
var mediaTypes valueCache[struct{}]

func knownMediaType(v string) bool {
	if mediaTypes.contains(v) {
		return true
	}
	t := strings.TrimSpace(v)
	if t == "" {
		return false
	}
	if _, _, err := mime.ParseMediaType(t); err != nil {
		return false
	}
	mediaTypes.add(v, struct{}{})
	return true
}

// sources caches parsed ce_source values: parsing the URI was a fifth of decoding.
var sources valueCache[*cachedSource]

type cachedSource struct {
	ref types.URIRef
	str string // ref formatted
	// nonBlank is Validate's rule for source, kept so that validV1 need not format the URI.
	nonBlank bool
}

// sourceStrings finds the cached source an event's source was copied from, by the address of
// its path's bytes, which every copy shares; the slot's entry is checked by comparing the whole
// URI, so a collision only costs a format.
var sourceStrings [256]atomic.Pointer[cachedSource]

func sourceSlot(u *url.URL) *atomic.Pointer[cachedSource] {
	return &sourceStrings[uintptr(unsafe.Pointer(unsafe.StringData(u.Path)))>>4%uintptr(len(sourceStrings))]
}

// Source returns e.Source(). For an event decoded here, whose source came from the cache, it
// does not format the URI again: formatting allocated for every command and join match.
func Source(e *event.Event) string {
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok {
		return e.Source()
	}
	if c := sourceSlot(&ec.Source.URL).Load(); c != nil && c.ref.URL == ec.Source.URL {
		return c.str
	}
	return ec.Source.String()
}

// setSource sets ec's source to v and reports whether it is non-blank as Validate sees it.
func setSource(ec *event.EventContextV1, v []byte) (nonBlank bool, err error) {
	if c, ok := sources.get(v); ok {
		ec.Source = c.ref
		return c.nonBlank, nil
	}
	s := string(v)
	if err := ec.SetSource(s); err != nil {
		return false, err
	}
	str := ec.Source.String()
	c := &cachedSource{ref: ec.Source, str: str, nonBlank: strings.TrimSpace(str) != ""}
	if sources.add(s, c) == c {
		sourceSlot(&c.ref.URL).Store(c)
	}
	return c.nonBlank, nil
}

// Sizes of the storage recordWriter carries inline, so that a typical record
// (up to inlineHeaders headers with up to inlineValues bytes of header values)
// costs one allocation for the record, its header slice and the header values.
const (
	inlineHeaders = 10
	inlineValues  = 256
)

// recordWriter is a binding.BinaryWriter that builds rec. ToRecord returns &rec,
// which keeps the inline header and value storage alive with it.
type recordWriter struct {
	rec kgo.Record
	// keyFromExtension is set when the caller gave no key, so the
	// partitionkey extension, if any, becomes the key.
	keyFromExtension bool
	// values holds the bytes of every header value; each header's Value is a
	// full slice expression of it (capacity capped) so that appending to one
	// value never overwrites the next.
	values    []byte
	headerBuf [inlineHeaders]kgo.RecordHeader
	valueBuf  [inlineValues]byte
}

var _ binding.BinaryWriter = (*recordWriter)(nil)

func newRecordWriter(topic string, key []byte) *recordWriter {
	w := &recordWriter{keyFromExtension: key == nil}
	w.rec.Topic = topic
	w.rec.Key = key
	return w
}

// Start implements binding.BinaryWriter.
func (w *recordWriter) Start(context.Context) error {
	w.rec.Headers = w.headerBuf[:0]
	w.values = w.valueBuf[:0]
	return nil
}

// SetAttribute implements binding.BinaryWriter.
func (w *recordWriter) SetAttribute(a spec.Attribute, value any) error {
	key := contentTypeHeader
	if a.Kind() != spec.DataContentType {
		key = attributeHeader(a.Name())
	}
	if value == nil {
		w.remove(key)
		return nil
	}
	_, err := w.add(key, value)
	return err
}

// SetExtension implements binding.BinaryWriter.
func (w *recordWriter) SetExtension(name string, value any) error {
	key := extensionHeader(name)
	if value == nil {
		w.remove(key)
		return nil
	}
	v, err := w.add(key, value)
	if err == nil && w.keyFromExtension && name == partitionKeyExtension {
		w.rec.Key = v
	}
	return err
}

// SetData implements binding.BinaryWriter. It keeps the bytes of a
// *bytes.Buffer (what binding.EventMessage passes, wrapping the event's data)
// instead of copying them.
func (w *recordWriter) SetData(r io.Reader) error {
	if b, ok := r.(*bytes.Buffer); ok {
		w.rec.Value = b.Bytes()
		return nil
	}
	v, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	w.rec.Value = v
	return nil
}

// End implements binding.BinaryWriter.
func (w *recordWriter) End(context.Context) error {
	if len(w.rec.Headers) == 0 {
		w.rec.Headers = nil
	}
	return nil
}

// add appends a header key with the canonical string form of value, and
// returns the header's value.
func (w *recordWriter) add(key string, value any) ([]byte, error) {
	start := len(w.values)
	values, err := appendCanonical(w.values, value)
	if err != nil {
		return nil, fmt.Errorf("header %s: %w", key, err)
	}
	w.values = values
	v := values[start:len(values):len(values)]
	w.rec.Headers = append(w.rec.Headers, kgo.RecordHeader{Key: key, Value: v})
	return v, nil
}

func (w *recordWriter) remove(key string) {
	hs := w.rec.Headers
	for i := range hs {
		if hs[i].Key == key {
			w.rec.Headers = append(hs[:i], hs[i+1:]...)
			return
		}
	}
}

// attributeHeader returns "ce_" + name without allocating for the attributes
// of spec versions 1.0 and 0.3.
func attributeHeader(name string) string {
	switch name {
	case "specversion":
		return "ce_specversion"
	case "id":
		return "ce_id"
	case "source":
		return "ce_source"
	case "type":
		return "ce_type"
	case "dataschema":
		return "ce_dataschema"
	case "schemaurl":
		return "ce_schemaurl"
	case "subject":
		return "ce_subject"
	case "time":
		return "ce_time"
	case "datacontenttype":
		return "ce_datacontenttype"
	case "datacontentencoding":
		return "ce_datacontentencoding"
	}
	return headerPrefix + name
}

// extensionHeader returns "ce_" + name without allocating for the extensions
// kevents uses on every event (distributed tracing and key mapping).
func extensionHeader(name string) string {
	switch name {
	case "traceparent":
		return "ce_traceparent"
	case "tracestate":
		return "ce_tracestate"
	case partitionKeyExtension:
		return "ce_partitionkey"
	}
	return headerPrefix + name
}

// appendCanonical appends the CloudEvents canonical string form of v to dst,
// the same string as types.Format(v), without allocating for the common types.
func appendCanonical(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		return append(dst, v...), nil
	case time.Time:
		return appendTime(dst, v), nil
	case types.Timestamp:
		return appendTime(dst, v.Time), nil
	case *types.Timestamp:
		if v != nil {
			return appendTime(dst, v.Time), nil
		}
	case bool:
		return strconv.AppendBool(dst, v), nil
	case int32:
		return strconv.AppendInt(dst, int64(v), 10), nil
	}
	s, err := types.Format(v)
	if err != nil {
		return dst, err
	}
	return append(dst, s...), nil
}

// appendTime appends t as types.FormatTime does: RFC 3339 in UTC with
// nanoseconds as needed.
func appendTime(dst []byte, t time.Time) []byte {
	return jsonw.AppendTime(dst, t.UTC())
}

// recordMessage is a binding.Message over a record in binary content mode
// (version set) or structured content mode (format set).
type recordMessage struct {
	rec     *kgo.Record
	version spec.Version
	format  format.Format
	// data wraps rec.Value for SetData, inline to save an allocation.
	data bytes.Buffer
}

var (
	_ binding.Message               = (*recordMessage)(nil)
	_ binding.MessageMetadataReader = (*recordMessage)(nil)
)

// ReadEncoding implements binding.MessageReader.
func (m *recordMessage) ReadEncoding() binding.Encoding {
	switch {
	case m.format != nil:
		return binding.EncodingStructured
	case m.version != nil:
		return binding.EncodingBinary
	}
	return binding.EncodingUnknown
}

// ReadStructured implements binding.MessageReader.
func (m *recordMessage) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	if m.format == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, m.format, bytes.NewReader(m.rec.Value))
}

// ReadBinary implements binding.MessageReader.
func (m *recordMessage) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	if m.version == nil || m.format != nil {
		return binding.ErrNotBinary
	}
	// Convert all the values to be read into one string and hand out
	// substrings of it: one allocation instead of one per header.
	n := 0
	for i := range m.rec.Headers {
		if h := &m.rec.Headers[i]; isBinaryHeader(h.Key) {
			n += len(h.Value)
		}
	}
	var sb strings.Builder
	sb.Grow(n)
	for i := range m.rec.Headers {
		if h := &m.rec.Headers[i]; isBinaryHeader(h.Key) {
			sb.Write(h.Value)
		}
	}
	all := sb.String()

	off := 0
	for i := range m.rec.Headers {
		h := &m.rec.Headers[i]
		if !isBinaryHeader(h.Key) {
			continue
		}
		v := all[off : off+len(h.Value)]
		off += len(h.Value)
		var err error
		if len(h.Key) == len(contentTypeHeader) && strings.EqualFold(h.Key, contentTypeHeader) {
			err = w.SetAttribute(m.version.AttributeFromKind(spec.DataContentType), v)
		} else if a := m.version.Attribute(h.Key); a != nil {
			err = w.SetAttribute(a, v)
		} else {
			err = w.SetExtension(strings.ToLower(h.Key[len(headerPrefix):]), v)
		}
		if err != nil {
			return fmt.Errorf("header %s: %w", h.Key, err)
		}
	}

	if m.rec.Value != nil {
		m.data = *bytes.NewBuffer(m.rec.Value)
		return w.SetData(&m.data)
	}
	return nil
}

// isBinaryHeader reports whether key is read in binary content mode: a ce_
// header with a name, or content-type.
func isBinaryHeader(key string) bool {
	if len(key) > len(headerPrefix) && strings.EqualFold(key[:len(headerPrefix)], headerPrefix) {
		return true
	}
	return len(key) == len(contentTypeHeader) && strings.EqualFold(key, contentTypeHeader)
}

// GetAttribute implements binding.MessageMetadataReader.
func (m *recordMessage) GetAttribute(k spec.Kind) (spec.Attribute, any) {
	if m.version == nil {
		return nil, nil
	}
	a := m.version.AttributeFromKind(k)
	if a == nil {
		return nil, nil
	}
	name := a.PrefixedName()
	if k == spec.DataContentType {
		name = contentTypeHeader
	}
	if v, ok := m.header(name); ok {
		return a, string(v)
	}
	return a, nil
}

// GetExtension implements binding.MessageMetadataReader.
func (m *recordMessage) GetExtension(name string) any {
	if v, ok := m.header(headerPrefix + name); ok {
		return string(v)
	}
	return nil
}

// header returns the value of the last header named key, case-insensitively.
func (m *recordMessage) header(key string) ([]byte, bool) {
	hs := m.rec.Headers
	for i := len(hs) - 1; i >= 0; i-- {
		if strings.EqualFold(hs[i].Key, key) {
			return hs[i].Value, true
		}
	}
	return nil, false
}

// Finish implements binding.Message.
func (*recordMessage) Finish(error) error { return nil }

// parseTime is time.Parse(time.RFC3339Nano, string(v)). The form ToRecord and most producers
// write, UTC with "Z" and up to nine fraction digits, is read by hand: time.Parse was a twelfth
// of the sensor's work per event. Anything else, including every form the hand-written reader
// would reject, is left to time.Parse, so the results and errors are time.Parse's.
func parseTime[T string | []byte](v T) (time.Time, error) {
	if t, ok := parseUTC(v); ok {
		return t, nil
	}
	return time.Parse(time.RFC3339Nano, string(v))
}

func parseUTC[T string | []byte](v T) (time.Time, bool) {
	const whole = len("2006-01-02T15:04:05")
	if len(v) < whole+1 || len(v) > whole+11 || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':' || v[len(v)-1] != 'Z' {
		return time.Time{}, false
	}
	year, month, day := digits(v[0:4]), digits(v[5:7]), digits(v[8:10])
	hour, minute, sec := digits(v[11:13]), digits(v[14:16]), digits(v[17:19])
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	ns := 0
	if frac := v[whole : len(v)-1]; len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 {
			return time.Time{}, false
		}
		if ns = digits(frac[1:]); ns < 0 {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			ns *= 10
		}
	}
	return time.Unix(daysSinceEpoch(year, month, day)*86400+int64(hour*3600+minute*60+sec), int64(ns)).UTC(), true
}

// digits is the decimal number d spells, or -1 if d holds anything but digits.
func digits[T string | []byte](d T) int {
	n := 0
	for i := range len(d) {
		c := d[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysSinceEpoch is the number of days from 1970-01-01 to a proleptic Gregorian date, for years
// 0 to 9999 (Howard Hinnant's days_from_civil).
func daysSinceEpoch(year, month, day int) int64 {
	if month <= 2 {
		year--
	}
	era := year / 400
	if year < 0 {
		era = (year - 399) / 400
	}
	yoe := year - era*400  // [0, 399]
	mp := (month + 9) % 12 // month from March, [0, 11]
	doy := (153*mp+2)/5 + day - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}
