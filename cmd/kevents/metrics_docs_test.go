package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsListEveryMetric: docs/operations.md describes every metric kevents serves.
func TestDocsListEveryMetric(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range servedMetrics(t) {
		if !strings.HasPrefix(name, "kevents_") && !strings.HasPrefix(name, "argo_events_") {
			continue
		}
		if strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_count") || strings.HasSuffix(name, "_sum") {
			continue // a histogram's series, documented by its name
		}
		if !strings.Contains(string(doc), "`"+name) {
			t.Errorf("docs/operations.md does not describe %s", name)
		}
	}
}
