package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// exampleSuffix marks a committed stand-in for a file that is not committed: the
// overlay's secrets.env is built from secrets.env.example when it is absent.
const exampleSuffix = ".example"

// LoadTree copies every file under root into an in-memory file system, at its
// absolute path, so builds read nothing else and write nowhere. A file X.example
// whose X is absent is also written as X.
func LoadTree(root string) (filesys.FileSystem, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	mem := filesys.MakeFsInMemory()
	present := map[string]bool{}
	var examples []string
	err = filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return mem.MkdirAll(path)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		present[path] = true
		if strings.HasSuffix(path, exampleSuffix) {
			examples = append(examples, path)
		}
		return mem.WriteFile(path, b)
	})
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", root, err)
	}
	for _, ex := range examples {
		real := strings.TrimSuffix(ex, exampleSuffix)
		if present[real] {
			continue
		}
		b, err := mem.ReadFile(ex)
		if err != nil {
			return nil, err
		}
		if err := mem.WriteFile(real, b); err != nil {
			return nil, err
		}
	}
	return mem, nil
}

// built is one object of a build: its identity for messages and its JSON.
type built struct {
	id   string // Kind namespace/name
	json []byte
	yaml []byte
}

// build runs kustomize on the kustomization in dir, with its default options: no
// plugins, files only from under the kustomization's own root.
func build(fsys filesys.FileSystem, dir string) ([]built, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, abs)
	if err != nil {
		return nil, fmt.Errorf("kustomize build: %w", err)
	}
	var out []built
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		id := r.GetKind() + " " + r.GetName()
		if ns := r.GetNamespace(); ns != "" {
			id = r.GetKind() + " " + ns + "/" + r.GetName()
		}
		out = append(out, built{id: id, json: b, yaml: y})
	}
	return out, nil
}
