// Command healthcheck tells what Argo CD and kstatus (Flux, kpt, cli-utils) make of Kubernetes
// objects, so that tests can check a TrainingJob's status against both without either running.
//
//	healthcheck -script charts/kubetrain/files/argocd-health.lua [objects.json]
//
// It reads JSON objects (one after another, or in JSON arrays) from the file or stdin, and
// prints one JSON line per object:
//
//	{"name":"...","argocd":{"status":"Healthy","message":"..."},"kstatus":{"status":"Current","message":"..."}}
//
// The Lua script runs in gopher-lua, the interpreter Argo CD embeds, as Argo CD runs health
// checks: the object in the global obj, a one-second limit, and only the base, table and
// package libraries (Argo CD also gives a safe os.time and os.date; there is no string or io
// library). kstatus is cli-utils' status.Compute.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type result struct {
	Name    string  `json:"name"`
	ArgoCD  verdict `json:"argocd"`
	KStatus verdict `json:"kstatus"`
}

func main() {
	script := flag.String("script", "", "the Argo CD health check (Lua) to run")
	flag.Parse()
	if *script == "" || flag.NArg() > 1 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck -script CHECK.lua [OBJECTS.json]")
		os.Exit(2)
	}
	if err := run(*script, flag.Arg(0), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func run(scriptPath, inputPath string, out io.Writer) error {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return err
	}
	in := os.Stdin
	if inputPath != "" && inputPath != "-" {
		if in, err = os.Open(inputPath); err != nil {
			return err
		}
		defer in.Close()
	}
	decoder, encoder := json.NewDecoder(in), json.NewEncoder(out)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		objects := []json.RawMessage{raw}
		if len(raw) > 0 && raw[0] == '[' {
			if err := json.Unmarshal(raw, &objects); err != nil {
				return err
			}
		}
		for _, object := range objects {
			res, err := check(string(script), object)
			if err != nil {
				return err
			}
			if err := encoder.Encode(res); err != nil {
				return err
			}
		}
	}
}

func check(script string, object json.RawMessage) (result, error) {
	// Unstructured decoding gives integers as int64, as in the objects Argo CD and kstatus see.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(object); err != nil {
		return result{}, err
	}
	argo, err := argoHealth(script, u.Object)
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", u.GetName(), err)
	}
	computed, err := status.Compute(u)
	if err != nil {
		return result{}, fmt.Errorf("%s: kstatus: %w", u.GetName(), err)
	}
	return result{u.GetName(), argo, verdict{computed.Status.String(), computed.Message}}, nil
}

// argoHealth runs the health script as Argo CD does: obj in, a table {status, message} out.
func argoHealth(script string, object map[string]any) (verdict, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage, lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable,
	} {
		L.Push(L.NewFunction(open))
		L.Push(lua.LString(name))
		L.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, object))
	if err := L.DoString(script); err != nil {
		return verdict{}, err
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return verdict{}, fmt.Errorf("the health script returned %s, not a table", L.Get(-1).Type())
	}
	v := verdict{Status: lua.LVAsString(hs.RawGetString("status")), Message: lua.LVAsString(hs.RawGetString("message"))}
	switch v.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return v, nil
	}
	return verdict{}, fmt.Errorf("the health script returned status %q, which Argo CD does not know", v.Status)
}

// toLua turns decoded JSON into Lua values: objects into tables by key, arrays into tables
// indexed from 1, numbers into numbers.
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case map[string]any:
		t := L.NewTable()
		for key, item := range v {
			t.RawSetString(key, toLua(L, item))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	}
	return lua.LNil
}
