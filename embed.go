package main

import (
	"embed"
	"io/fs"
)

//go:embed docs/workflows
var docsFS embed.FS

// recordedDocs are the committed workflow diagrams, served under
// /diagrams/workflows/ (a test keeps them current).
func recordedDocs() fs.FS {
	sub, err := fs.Sub(docsFS, "docs")
	if err != nil {
		panic(err)
	}
	return sub
}
