// Renders Modelfile TEMPLATEs with Go's text/template, filling the data the way Ollama's chat
// endpoint does (our own re-statement of its behaviour, checked against server/routes.go and
// template/template.go): the Modelfile SYSTEM becomes a leading system message when the chat has
// none; consecutive messages of one role (tool messages aside) are merged with a blank line;
// .System joins every system message and .Messages still holds them; .Response is empty.
//
// stdin: a JSON list of {"template", "system", "messages": [{"role", "content"}]}
// stdout: a JSON list of rendered prompts, in order. Only the standard library (Go 1.19+).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

type message struct {
	Role       string `json:"role"`
	Content    string `json:"content"`
	Thinking   string
	Images     []string
	ToolCalls  []any
	ToolName   string
	ToolCallID string
}

type request struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []message `json:"messages"`
}

// The helpers Ollama registers for templates; same names, simplified bodies.
var helpers = template.FuncMap{
	"json":             func(v any) string { b, _ := json.Marshal(v); return string(b) },
	"currentDate":      func(...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate":    func(...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(any) string { return "any" },
}

// names lists every field and variable a template mentions, lower-cased.
func names(node parse.Node, into map[string]bool) {
	switch n := node.(type) {
	case *parse.ListNode:
		if n != nil {
			for _, c := range n.Nodes {
				names(c, into)
			}
		}
	case *parse.ActionNode:
		names(n.Pipe, into)
	case *parse.TemplateNode:
		if n.Pipe != nil {
			names(n.Pipe, into)
		}
	case *parse.IfNode:
		names(&n.BranchNode, into)
	case *parse.RangeNode:
		names(&n.BranchNode, into)
	case *parse.WithNode:
		names(&n.BranchNode, into)
	case *parse.BranchNode:
		names(n.Pipe, into)
		names(n.List, into)
		if n.ElseList != nil {
			names(n.ElseList, into)
		}
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				names(a, into)
			}
		}
	case *parse.FieldNode:
		for _, id := range n.Ident {
			into[strings.ToLower(id)] = true
		}
	case *parse.VariableNode:
		for _, id := range n.Ident {
			into[strings.ToLower(id)] = true
		}
	}
}

func render(r request) (string, error) {
	msgs := r.Messages
	if r.System != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]message{{Role: "system", Content: r.System}}, msgs...)
	}
	var systems []string
	var merged []*message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if len(merged) > 0 && merged[len(merged)-1].Role == m.Role && m.Role != "tool" {
			merged[len(merged)-1].Content += "\n\n" + m.Content
		} else {
			merged = append(merged, &m)
		}
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(helpers).Parse(r.Template)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	for _, t := range tmpl.Templates() {
		names(t.Root, seen)
	}
	if !seen["messages"] {
		return "", fmt.Errorf("the template never reads .Messages: Ollama would run its per-turn legacy path, not modelled here")
	}
	var out strings.Builder
	err = tmpl.Execute(&out, map[string]any{
		"System":     strings.Join(systems, "\n\n"),
		"Messages":   merged,
		"Tools":      nil,
		"Response":   "",
		"Think":      false,
		"ThinkLevel": "",
		"IsThinkSet": false,
	})
	return out.String(), err
}

func main() {
	var requests []request
	if err := json.NewDecoder(os.Stdin).Decode(&requests); err != nil {
		fmt.Fprintln(os.Stderr, "reading the requests:", err)
		os.Exit(2)
	}
	rendered := make([]string, 0, len(requests))
	for i, r := range requests {
		text, err := render(r)
		if err != nil {
			fmt.Fprintf(os.Stderr, "request %d: %v\n", i, err)
			os.Exit(1)
		}
		rendered = append(rendered, text)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rendered); err != nil {
		os.Exit(2)
	}
}
