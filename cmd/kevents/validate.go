package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/sensor"
	"github.com/kevents/kevents/source"
)

// checked is a loaded document with every reason it cannot run.
type checked struct {
	api.Document
	Err error
}

// checkDocuments loads definitions and checks each document as the runtime would.
func checkDocuments(paths []string) ([]checked, error) {
	docs, err := api.LoadPaths(paths...)
	if err != nil {
		return nil, err
	}
	out := make([]checked, len(docs))
	for i, d := range docs {
		out[i] = checkDocument(d)
	}
	return out, nil
}

// checkDocument checks one loaded document as the runtime would.
func checkDocument(d api.Document) checked {
	c := checked{Document: d, Err: d.Err}
	switch {
	case c.Err != nil:
	case d.EventSource != nil:
		if err := source.Check(d.EventSource); err != nil {
			c.Err = fmt.Errorf("%s: %w", d, err)
		}
	case d.Sensor != nil:
		if err := sensor.Check(d.Sensor); err != nil {
			c.Err = fmt.Errorf("%s: %w", d, err)
		}
	}
	return c
}

// validateSummary counts the outcome of a validation.
type validateSummary struct{ OK, Unsupported, Invalid, Skipped int }

func (s validateSummary) failed() bool { return s.Unsupported+s.Invalid > 0 }

// writeValidation prints one line per document and the summary.
func writeValidation(w io.Writer, docs []checked) validateSummary {
	var s validateSummary
	// One line per document: the reasons a document cannot run are joined with "; ".
	oneLine := func(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
	for _, d := range docs {
		switch {
		case d.Err != nil && isOnlyUnsupported(d.Err):
			s.Unsupported++
			fmt.Fprintf(w, "unsupported %s\n", oneLine(d.Err))
		case d.Err != nil:
			s.Invalid++
			fmt.Fprintf(w, "invalid     %s\n", oneLine(d.Err))
		case d.Skipped != "":
			s.Skipped++
			fmt.Fprintf(w, "skipped     %s: %s\n", d.Document, d.Skipped)
		default:
			s.OK++
			fmt.Fprintf(w, "ok          %s\n", d.Document)
		}
	}
	fmt.Fprintf(w, "%d documents: %d ok, %d not supported yet, %d invalid, %d skipped (not EventSource or Sensor)\n",
		len(docs), s.OK, s.Unsupported, s.Invalid, s.Skipped)
	return s
}

// isOnlyUnsupported reports whether every error joined in err is a "not supported yet".
func isOnlyUnsupported(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !isOnlyUnsupported(e) {
				return false
			}
		}
		return true
	}
	if errors.Is(err, api.ErrNotSupported) {
		return true
	}
	if u := errors.Unwrap(err); u != nil {
		return isOnlyUnsupported(u)
	}
	return false
}

func newValidateCmd() *cobra.Command {
	var paths []string
	cmd := &cobra.Command{
		Use:   "validate -f PATH [-f PATH...]",
		Short: "Check EventSource and Sensor definitions; exit non-zero on any error",
		Long: `validate loads every YAML document under the given files and folders as 'kevents run'
would, prints one line per document (ok, unsupported, invalid or skipped, with the reason) and a
summary, and exits non-zero if any document cannot run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			docs, err := checkDocuments(paths)
			if err != nil {
				return err
			}
			if s := writeValidation(cmd.OutOrStdout(), docs); s.failed() {
				return fmt.Errorf("%d of %d documents cannot run", s.Unsupported+s.Invalid, len(docs))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&paths, "file", "f", nil, "a definitions file or folder (repeatable)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}
