package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/tidwall/gjson"
	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// scriptTimeout bounds one run of a Lua script (a filter or a transform) or of a jq program.
// A script still running when it expires fails with an error instead of holding the partition.
const scriptTimeout = time.Second

// scriptFilter is a compiled `filters.script`: a Lua chunk, parsed and compiled to a function
// prototype once at load time, run against the data of each event.
//
// As in Argo Events, the script sees the event data (never the context) as the global table
// `event` and returns a boolean. match is safe for concurrent use: each call borrows a
// sandboxed Lua state of its own from a pool.
type scriptFilter struct {
	prog *luaProgram
}

// compileScriptFilter parses and compiles a Lua filter. path names the field in errors
// ("spec.dependencies[0] (a).filters.script"); a syntax error is a load error that names path
// and carries Lua's message. An empty script compiles to nil, which matches every event, as in
// Argo.
func compileScriptFilter(path, src string) (*scriptFilter, error) {
	if src == "" {
		return nil, nil
	}
	prog, err := compileLua(path, src)
	if err != nil {
		return nil, err
	}
	return &scriptFilter{prog: prog}, nil
}

// match runs the script against e's data with Argo's semantics:
//   - an event without data passes (true, nil);
//   - data that is not JSON, or JSON that is neither an object nor null, is an error;
//   - the data object is the global table `event` (null is an empty table);
//   - the last value the script returns decides; it must be a boolean. Argo treats any other
//     value, or none, as false; kevents reports it as an error so that a script that forgot
//     its return does not drop every event silently;
//   - a Lua error, or a run longer than scriptTimeout, is an error.
//
// Globals the script sets do not carry over to the next event (Argo starts a new Lua state
// per event; kevents reuses states but gives each run a fresh environment). A nil
// *scriptFilter matches everything. match is safe for concurrent use.
func (s *scriptFilter) match(e *cloudevents.Event) (bool, error) {
	if s == nil {
		return true, nil
	}
	if e == nil {
		return false, fmt.Errorf("%s: nil event", s.prog.path)
	}
	data := e.Data()
	if len(data) == 0 {
		return true, nil
	}
	var pass bool
	err := s.prog.run(data, func(ret lua.LValue, n int) error {
		if n == 0 {
			return errors.New("the script returned nothing; it must return true or false")
		}
		b, ok := ret.(lua.LBool)
		if !ok {
			return fmt.Errorf("the script returned %s; it must return true or false", luaDescribe(ret))
		}
		pass = bool(b)
		return nil
	})
	if err != nil {
		return false, err
	}
	return pass, nil
}

// luaProgram is a compiled Lua chunk and a pool of sandboxed states ready to run it. Its
// methods are safe for concurrent use: an LState is never shared by two goroutines.
type luaProgram struct {
	path    string
	lines   []string // of the source, quoted in errors
	proto   *lua.FunctionProto
	timeout time.Duration
	pool    sync.Pool // of *luaVM
}

// luaVM is one pooled Lua state with the program loaded as a function.
type luaVM struct {
	L       *lua.LState
	fn      *lua.LFunction
	globals *lua.LTable // the sandbox's globals: the libraries
	envMeta *lua.LTable // {__index = globals}, the metatable of each run's environment
}

func compileLua(path, src string) (*luaProgram, error) {
	lines := strings.Split(src, "\n")
	chunk, err := parse.Parse(strings.NewReader(src), "script")
	if err != nil {
		return nil, fmt.Errorf("%s: not a valid Lua script: %s", path, withSourceLine(oneLine(err.Error()), lines))
	}
	proto, err := lua.Compile(chunk, "script")
	if err != nil {
		return nil, fmt.Errorf("%s: not a valid Lua script: %s", path, withSourceLine(oneLine(err.Error()), lines))
	}
	p := &luaProgram{path: path, lines: lines, proto: proto, timeout: scriptTimeout}
	p.pool.New = func() any { return p.newVM() }
	return p, nil
}

// newVM makes a sandboxed state: the base, table, string and math libraries, minus everything
// that reads files or loads modules (dofile, loadfile, require, module), collectgarbage and
// _printregs; print logs at debug level instead of writing to stdout; os holds only the clock
// functions (time, clock, date, difftime), never execute, getenv, remove, exit and the like.
// No io, os (beyond that), package, debug, coroutine or channel library.
func (p *luaProgram) newVM() *luaVM {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
		{lua.OsLibName, lua.OpenOs},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	g := L.G.Global
	for _, name := range []string{"dofile", "loadfile", "require", "module", "collectgarbage", "_printregs"} {
		g.RawSetString(name, lua.LNil)
	}
	path := p.path
	g.RawSetString("print", L.NewFunction(func(L *lua.LState) int {
		parts := make([]string, L.GetTop())
		for i := range parts {
			parts[i] = L.ToStringMeta(L.Get(i + 1)).String()
		}
		slog.Debug("lua print", "script", path, "text", strings.Join(parts, "\t"))
		return 0
	}))
	if full, ok := g.RawGetString(lua.OsLibName).(*lua.LTable); ok {
		safe := L.NewTable()
		for _, name := range []string{"time", "clock", "date", "difftime"} {
			safe.RawSetString(name, full.RawGetString(name))
		}
		g.RawSetString(lua.OsLibName, safe)
		if loaded, ok := L.GetField(L.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable); ok {
			loaded.RawSetString(lua.OsLibName, safe)
		}
	}
	envMeta := L.NewTable()
	envMeta.RawSetString("__index", g)
	return &luaVM{L: L, fn: L.NewFunctionFromProto(p.proto), globals: g, envMeta: envMeta}
}

// run converts data (a JSON object or null) to the global `event`, runs the program in a fresh
// environment (globals a script sets do not outlive the run; the libraries are shared by the
// runs of one pooled state) and hands the last returned value and the number of returned
// values to result, which runs while the state is still borrowed. Errors name p.path.
func (p *luaProgram) run(data []byte, result func(ret lua.LValue, n int) error) error {
	root, err := jsonObject(data)
	if err != nil {
		return fmt.Errorf("%s: %w", p.path, err)
	}
	vm := p.pool.Get().(*luaVM)
	L := vm.L
	env := L.CreateTable(0, 1)
	env.Metatable = vm.envMeta
	event := jsonToLua(L, root)
	if event == lua.LNil {
		event = L.NewTable() // null data
	}
	env.RawSetString("event", event)
	vm.fn.Env = env

	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	L.SetContext(ctx)
	L.Push(vm.fn)
	err = L.PCall(0, lua.MultRet, nil)
	L.RemoveContext()
	timedOut := ctx.Err() != nil
	cancel()
	if err == nil {
		n := L.GetTop()
		ret := lua.LValue(lua.LNil)
		if n > 0 {
			ret = L.Get(-1)
		}
		if rerr := result(ret, n); rerr != nil {
			err = fmt.Errorf("%s: %w", p.path, rerr)
		}
	} else if timedOut {
		err = fmt.Errorf("%s: the script ran longer than %s and was stopped", p.path, p.timeout)
	} else {
		err = fmt.Errorf("%s: %s", p.path, withSourceLine(luaErrorText(err), p.lines))
	}
	if timedOut {
		// A state interrupted mid-run is not trusted again.
		L.Close()
		return err
	}
	L.SetTop(0)
	vm.fn.Env = vm.globals
	p.pool.Put(vm)
	return err
}

// jsonObject parses event data for a script or jq: it must be JSON, and a JSON object or null
// (an empty object), as Argo unmarshals it into a map.
func jsonObject(data []byte) (gjson.Result, error) {
	if !gjson.ValidBytes(data) {
		return gjson.Result{}, errors.New("event data is not JSON")
	}
	root := gjson.ParseBytes(data)
	switch {
	case root.IsObject(), root.Type == gjson.Null:
		return root, nil
	default:
		return gjson.Result{}, fmt.Errorf("event data is %s, not a JSON object", jsonKind(root))
	}
}

func jsonKind(r gjson.Result) string {
	switch r.Type {
	case gjson.String:
		return "a JSON string"
	case gjson.Number:
		return "a JSON number"
	case gjson.True, gjson.False:
		return "a JSON boolean"
	case gjson.Null:
		return "JSON null"
	}
	if r.IsArray() {
		return "a JSON array"
	}
	return "JSON"
}

// jsonToLua converts parsed JSON to Lua: objects and arrays become tables, null becomes nil
// (an absent key; a hole in an array, which keeps the positions of the items after it).
// Arrays carry a metatable {__is_array = true}, shared by the arrays of one conversion, so
// that a transform turns them back into JSON arrays even when they are or become empty.
func jsonToLua(L *lua.LState, r gjson.Result) lua.LValue {
	c := jsonConverter{L: L}
	return c.convert(r)
}

type jsonConverter struct {
	L         *lua.LState
	arrayMeta *lua.LTable
}

func (c *jsonConverter) convert(r gjson.Result) lua.LValue {
	switch r.Type {
	case gjson.Null:
		return lua.LNil
	case gjson.False:
		return lua.LFalse
	case gjson.True:
		return lua.LTrue
	case gjson.Number:
		return lua.LNumber(r.Num)
	case gjson.String:
		return lua.LString(r.Str)
	}
	// Tables are sized exactly: gopher-lua's default sizes cost more than a counting pass.
	n := 0
	r.ForEach(func(_, _ gjson.Result) bool { n++; return true })
	if r.IsArray() {
		t := c.L.CreateTable(n, 0)
		i := 0
		r.ForEach(func(_, v gjson.Result) bool {
			i++
			if lv := c.convert(v); lv != lua.LNil {
				t.RawSetInt(i, lv)
			}
			return true
		})
		if c.arrayMeta == nil {
			c.arrayMeta = c.L.CreateTable(0, 1)
			c.arrayMeta.RawSetString(luaArrayFlag, lua.LTrue)
		}
		t.Metatable = c.arrayMeta
		return t
	}
	t := c.L.CreateTable(0, n)
	r.ForEach(func(k, v gjson.Result) bool {
		// nil deletes: a null key is absent, also when it repeats an earlier key.
		t.RawSetString(k.Str, c.convert(v))
		return true
	})
	return t
}

// luaArrayFlag is the metatable field that marks a table as a JSON array, as in Argo.
const luaArrayFlag = "__is_array"

// maxLuaDepth bounds the nesting of a table converted to JSON, which also stops cycles.
const maxLuaDepth = 1000

// luaToGo converts the table a transform script returns to a value encoding/json marshals.
// A table is an array when it is marked with __is_array or has items 1..n (n > 0; missing
// items are null), and an object otherwise; unlike Argo, which drops the other keys of an
// array silently, a table with both items and other keys is an error. Object keys are strings
// or numbers; functions, userdata, threads, NaN and infinities are errors, which name the
// offending value by a jq-like path from "result".
func luaToGo(v lua.LValue) (any, error) {
	out, err := luaValueToGo(v, 0)
	if err != nil {
		where := "result"
		for i := len(err.path) - 1; i >= 0; i-- {
			where += err.path[i]
		}
		if len(where) > 100 {
			where = where[:97] + "..."
		}
		return nil, fmt.Errorf("%s %s", where, err.msg)
	}
	return out, nil
}

// luaValueError is a conversion error; path holds its segments innermost first, added on the
// way out so that a successful conversion builds no paths.
type luaValueError struct {
	path []string
	msg  string
}

func (e *luaValueError) in(segment string) *luaValueError {
	e.path = append(e.path, segment)
	return e
}

func luaValueToGo(v lua.LValue, depth int) (any, *luaValueError) {
	switch v := v.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(v), nil
	case lua.LString:
		return string(v), nil
	case lua.LNumber:
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, &luaValueError{msg: fmt.Sprintf("is %v, which JSON cannot represent", v)}
		}
		return f, nil
	case *lua.LTable:
		if depth >= maxLuaDepth {
			return nil, &luaValueError{msg: fmt.Sprintf("is nested more than %d deep (a table that contains itself?)", maxLuaDepth)}
		}
		n := v.MaxN()
		array := n > 0
		if mt, ok := v.Metatable.(*lua.LTable); ok && mt.RawGetString(luaArrayFlag) == lua.LTrue {
			array = true
		}
		if array {
			var bad lua.LValue
			v.ForEach(func(k, _ lua.LValue) {
				if i, ok := k.(lua.LNumber); bad == nil && (!ok || float64(i) != math.Trunc(float64(i)) || i < 1 || int(i) > n) {
					bad = k
				}
			})
			if bad != nil {
				return nil, &luaValueError{msg: fmt.Sprintf("mixes array items with the key %s; a table becomes either a JSON array or an object", luaDescribe(bad))}
			}
			out := make([]any, n)
			for i := 1; i <= n; i++ {
				x, err := luaValueToGo(v.RawGetInt(i), depth+1)
				if err != nil {
					return nil, err.in(fmt.Sprintf("[%d]", i-1))
				}
				out[i-1] = x
			}
			return out, nil
		}
		out := map[string]any{}
		var err *luaValueError
		v.ForEach(func(k, x lua.LValue) {
			if err != nil {
				return
			}
			var key string
			switch k := k.(type) {
			case lua.LString:
				key = string(k)
			case lua.LNumber:
				key = k.String()
			default:
				err = &luaValueError{msg: fmt.Sprintf("has a %s key, which JSON cannot represent", k.Type())}
				return
			}
			if out[key], err = luaValueToGo(x, depth+1); err != nil {
				err = err.in("." + key)
			}
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	default:
		return nil, &luaValueError{msg: fmt.Sprintf("is a %s, which JSON cannot represent", v.Type())}
	}
}

// luaErrorText is a Lua error without its stack trace.
func luaErrorText(err error) string {
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Object != nil {
		return oneLine(apiErr.Object.String())
	}
	return oneLine(err.Error())
}

// luaLine finds the line number in the messages of gopher-lua's parser ("line:2(column:28)"),
// compiler ("near line(1)") and runtime ("script:3: attempt to ...").
var luaLine = regexp.MustCompile(`(?:line[:(]|^script:)(\d+)`)

// withSourceLine appends the source line a Lua message points at, quoted and shortened.
func withSourceLine(msg string, lines []string) string {
	m := luaLine.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 1 || n > len(lines) {
		return msg
	}
	line := strings.TrimSpace(lines[n-1])
	if line == "" {
		return msg
	}
	if len(line) > 80 {
		line = line[:77] + "..."
	}
	return fmt.Sprintf("%s (line %d: %q)", msg, n, line)
}

// luaDescribe renders a value for an error message: nil, or the value and its type.
func luaDescribe(v lua.LValue) string {
	if v == lua.LNil {
		return "nil"
	}
	s := v.String()
	if _, ok := v.(lua.LString); ok {
		s = fmt.Sprintf("%q", s)
	}
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return fmt.Sprintf("%s (a %s)", s, v.Type())
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
