package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/fsnotify/fsnotify"
	"github.com/google/uuid"

	"github.com/kevents/kevents/api"
)

// The file source reports file system events of the files of one directory (Argo's file event
// source), once in the cluster: the member that owns its partition of <prefix>.sources watches
// the directory, as its own file system shows it, and commits the events there (see
// OwnedSource). It keeps no state: a new owner reports what happens from its start on. The
// directory plays the outside server for kevents_source_connected and readiness: not connected
// while it cannot be watched (missing, unreadable), connected while it is.
//
// The event data is Argo's: {"name": the file's path, "op": the operation as Argo's fsevent.Op
// number (CREATE 1, WRITE 2, REMOVE 4, RENAME 8, CHMOD 16, or'ed when fsnotify reports several),
// "metadata"}. A rename is reported as RENAME on the old name and CREATE on the new one, as
// inotify does, in both modes (Argo's polling mode names only the file, not its path).
func init() {
	RegisterOwned("file", Spec{
		Summary: "File system events of one directory (fsnotify, or polling), once in the cluster: the member that owns its partition of <prefix>.sources watches the directory.",
		Check: func(ev api.Event) error {
			f, specErr := specOf[api.FileEventSource](ev)
			if specErr != nil {
				return specErr
			}
			_, err := parseFile(f)
			return err
		},
	}, newFile)
}

// fileOps maps the eventType names to the op bits of Argo's fsevent.Op, which are fsnotify's.
var fileOps = []struct {
	name string
	op   fsnotify.Op
}{{"CREATE", fsnotify.Create}, {"WRITE", fsnotify.Write}, {"REMOVE", fsnotify.Remove}, {"RENAME", fsnotify.Rename}, {"CHMOD", fsnotify.Chmod}}

// Timing of the file source; variables so tests can shorten them.
var (
	filePollInterval = 100 * time.Millisecond // Argo's polling interval
	fileRetry        = 2 * time.Second        // between attempts to watch a missing directory
)

// fileMaxPerCommit bounds one transaction when a burst of events waits.
const fileMaxPerCommit = 500

// fileEventData is Argo's fsevent.Event.
type fileEventData struct {
	Name     string            `json:"name"`
	Op       uint32            `json:"op"`
	Metadata map[string]string `json:"metadata"`
}

// fileSettings is a file event's spec, checked and normalised.
type fileSettings struct {
	dir  string // cleaned
	path string // a file name in dir; "" with re
	re   *regexp.Regexp
	op   fsnotify.Op
}

// parseFile validates a file event and returns its settings. Errors name the field (the caller
// adds spec.file.<event>), the value and what was expected.
func parseFile(f api.FileEventSource) (*fileSettings, error) {
	var errs []error
	s := &fileSettings{}
	names := make([]string, 0, len(fileOps))
	for _, o := range fileOps {
		names = append(names, o.name)
		if f.EventType == o.name {
			s.op = o.op
		}
	}
	if s.op == 0 {
		errs = append(errs, fmt.Errorf("eventType: %q; expected one of %s (as fsnotify names them)", f.EventType, strings.Join(names, ", ")))
	}
	w := f.WatchPathConfig
	switch {
	case w.Directory == "":
		errs = append(errs, errors.New("watchPathConfig.directory: missing; expected the absolute path of the directory to watch"))
	case !filepath.IsAbs(w.Directory):
		errs = append(errs, fmt.Errorf("watchPathConfig.directory: %q; expected an absolute path", w.Directory))
	default:
		s.dir = filepath.Clean(w.Directory)
	}
	switch {
	case w.Path == "" && w.PathRegexp == "":
		errs = append(errs, errors.New("watchPathConfig.path, watchPathConfig.pathRegexp: neither is set; expected one of them"))
	case w.Path != "" && w.PathRegexp != "":
		errs = append(errs, fmt.Errorf("watchPathConfig.path %q and pathRegexp %q: both are set; expected one of them", w.Path, w.PathRegexp))
	case w.Path != "":
		// The watch is not recursive (as in Argo): a path into a subdirectory would never match.
		p := filepath.Clean(w.Path)
		if filepath.IsAbs(w.Path) || strings.ContainsRune(p, filepath.Separator) || p == "." || p == ".." {
			errs = append(errs, fmt.Errorf("watchPathConfig.path: %q; expected the name of a file directly in the directory (the watch is not recursive)", w.Path))
		}
		s.path = p
	default:
		re, err := regexp.Compile(w.PathRegexp)
		if err != nil {
			errs = append(errs, fmt.Errorf("watchPathConfig.pathRegexp: %q: %w; expected a Go regular expression matched against file names", w.PathRegexp, err))
		}
		s.re = re
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// matches reports whether the file at name (a path in the directory) is watched.
func (s *fileSettings) matches(name string) bool {
	rel, err := filepath.Rel(s.dir, name)
	if err != nil {
		return false
	}
	if s.re != nil {
		return s.re.MatchString(rel)
	}
	return rel == s.path
}

// fileChange is one event of a watched file.
type fileChange struct {
	name string
	op   fsnotify.Op
}

type fileSource struct {
	b   Build
	cfg api.FileEventSource
	set *fileSettings
	log *slog.Logger
}

func newFile(b Build) (OwnedSource, error) {
	cfg, specErr := specOf[api.FileEventSource](b.Event)
	if specErr != nil {
		return nil, specErr
	}
	set, err := parseFile(cfg)
	if err != nil {
		return nil, err
	}
	return &fileSource{b: b, cfg: cfg, set: set,
		log: b.Env.Logger.With("eventsource", b.EventSource.Metadata.Name, "event", b.Event.Name, "directory", set.dir)}, nil
}

// RunOwned implements OwnedSource: it watches the directory and commits the events of the
// watched files, in batches when they come faster than Kafka commits.
func (f *fileSource) RunOwned(ctx context.Context, _ []byte, commit Commit) error {
	env := f.b.Env
	ns, es, name := f.b.EventSource.Metadata.Namespace, f.b.EventSource.Metadata.Name, f.b.Event.Name
	watchCtx, cancel := context.WithCancel(ctx)
	changes := make(chan fileChange, 1024)
	watching := make(chan struct{})
	// The directory plays the outside server: watched (connected) or not (missing, unreadable).
	health := newSourceHealth(watchCtx, f.b)
	go func() {
		defer close(watching)
		if f.cfg.Polling {
			f.poll(watchCtx, changes, health)
		} else {
			f.notify(watchCtx, changes, health)
		}
	}()
	defer func() {
		cancel()
		<-watching
		health.stop()
	}()
	for {
		var batch []fileChange
		select {
		case <-ctx.Done():
			return nil
		case c := <-changes:
			batch = append(batch, c)
		}
		batch = drainReady(batch, changes, fileMaxPerCommit)
		events := make([]cloudevents.Event, 0, len(batch))
		for _, c := range batch {
			e, err := f.event(c)
			if err != nil {
				return err
			}
			events = append(events, e)
		}
		env.Metrics.EventsReceived.WithLabelValues(es, name).Add(float64(len(events)))
		// No state to keep: the commit's state record is a tombstone for the source's key.
		if err := commit(ctx, events, nil); err != nil {
			env.Metrics.PublishFailed(ns, es, name, len(events))
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		env.Metrics.Published(ns, es, name, len(events))
	}
}

func (f *fileSource) event(c fileChange) (cloudevents.Event, error) {
	var op uint32
	for _, o := range fileOps {
		if c.op.Has(o.op) {
			op |= uint32(o.op)
		}
	}
	return f.b.NewEvent(uuid.NewString(), time.Now().UTC(), fileEventData{Name: c.name, Op: op, Metadata: f.cfg.Metadata})
}

// offer hands a change of the file at name to the commit loop when the file is watched and
// the change is of the event's type.
func (f *fileSource) offer(ctx context.Context, out chan<- fileChange, name string, op fsnotify.Op) {
	if !op.Has(f.set.op) || !f.set.matches(name) {
		return
	}
	select {
	case out <- fileChange{name: name, op: op}:
	case <-ctx.Done():
	}
}

// waitFor calls try until it succeeds or ctx ends, every fileRetry; it warns once when the
// first attempt fails. A directory that is missing does not stop the source (nor the other
// owned sources of its partition): it is watched once it exists.
func (f *fileSource) waitFor(ctx context.Context, try func() error, health *sourceHealth) bool {
	warned := false
	for {
		err := try()
		if err == nil {
			health.set(nil)
			return true
		}
		health.set(fmt.Errorf("cannot watch directory %s: %w", f.set.dir, err))
		if !warned {
			f.log.Warn("file: cannot watch the directory; retrying until it can be", "retryEvery", fileRetry, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(fileRetry):
		}
	}
}

// notify watches the directory through fsnotify until ctx ends, watching it again when it was
// removed or renamed.
func (f *fileSource) notify(ctx context.Context, out chan<- fileChange, health *sourceHealth) {
	for ctx.Err() == nil {
		var w *fsnotify.Watcher
		ok := f.waitFor(ctx, func() error {
			nw, err := fsnotify.NewWatcher()
			if err != nil {
				return err
			}
			if err := nw.Add(f.set.dir); err != nil {
				nw.Close()
				return err
			}
			w = nw
			return nil
		}, health)
		if !ok {
			return
		}
		f.log.Info("file: watching the directory")
		f.watch(ctx, w, out)
		w.Close()
		health.set(fmt.Errorf("directory %s was removed or renamed; watching it again once it exists", f.set.dir))
	}
}

// watch forwards the events of w until ctx ends or the directory itself goes away.
func (f *fileSource) watch(ctx context.Context, w *fsnotify.Watcher, out chan<- fileChange) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Name == f.set.dir && ev.Op.Has(fsnotify.Remove|fsnotify.Rename) {
				f.log.Warn("file: the directory was removed or renamed; watching it again once it exists")
				return
			}
			f.offer(ctx, out, ev.Name, ev.Op)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow of the kernel's queue loses events; nothing else can be done here.
			f.log.Warn("file: watcher error; events may have been missed", "err", err)
		}
	}
}

// poll scans the directory every filePollInterval until ctx ends, and reports what changed
// between two scans: the first scan (and the first after the directory came back) is the
// baseline, as a new fsnotify watch reports nothing about files already there.
func (f *fileSource) poll(ctx context.Context, out chan<- fileChange, health *sourceHealth) {
	var prev map[string]os.FileInfo
	t := time.NewTicker(filePollInterval)
	defer t.Stop()
	warned := false
	for {
		cur, err := scanDir(f.set.dir)
		if err != nil {
			health.set(fmt.Errorf("cannot read directory %s: %w", f.set.dir, err))
		} else {
			health.set(nil)
		}
		switch {
		case err != nil:
			if !warned {
				f.log.Warn("file: cannot read the directory; polling until it can be read", "err", err)
				warned = true
			}
		case prev != nil:
			for _, c := range pollChanges(f.set.dir, prev, cur) {
				f.offer(ctx, out, c.name, c.op)
			}
		default:
			f.log.Info("file: watching the directory (polling)", "interval", filePollInterval)
			warned = false
		}
		prev = cur
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scanDir lists the entries of dir with their (lstat) file info.
func scanDir(dir string) (map[string]os.FileInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]os.FileInfo, len(entries))
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue // removed since the listing: the next scan reports it
		}
		out[e.Name()] = info
	}
	return out, nil
}

// pollChanges compares two scans of dir as inotify would have reported the difference: a file
// that is still the same file under another name was renamed (RENAME on the old name, CREATE on
// the new one); a name whose file was replaced is a CREATE; a changed size or modification time
// is a WRITE and a changed mode a CHMOD. Changes are in name order. A file system that gives a
// new file the inode of one removed between two scans makes that look like a rename.
func pollChanges(dir string, prev, cur map[string]os.FileInfo) []fileChange {
	var out []fileChange
	add := func(name string, op fsnotify.Op) {
		out = append(out, fileChange{name: filepath.Join(dir, name), op: op})
	}
	for name, was := range prev {
		now, ok := cur[name]
		if ok && os.SameFile(was, now) {
			if now.Size() != was.Size() || !now.ModTime().Equal(was.ModTime()) {
				add(name, fsnotify.Write)
			}
			if now.Mode() != was.Mode() {
				add(name, fsnotify.Chmod)
			}
			continue
		}
		renamed := false
		for other, info := range cur {
			if other != name && os.SameFile(was, info) {
				renamed = true
				break
			}
		}
		switch {
		case renamed:
			add(name, fsnotify.Rename)
		case !ok:
			add(name, fsnotify.Remove)
		}
		if ok {
			add(name, fsnotify.Create)
		}
	}
	for name := range cur {
		if _, ok := prev[name]; !ok {
			add(name, fsnotify.Create)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
