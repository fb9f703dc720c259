// Command embedgen writes the two files that ../main.go embeds, from the schema.json and
// terraform-mapping.json that the provider module ships: the schema with its version set,
// both compacted. Usage: go run ./embedgen -version X.Y.Z -out DIR
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

const providerModule = "github.com/pulumi/pulumi-kubernetes/provider/v4"

func main() {
	version := flag.String("version", "", "version written into the schema")
	out := flag.String("out", ".", "folder that receives the *-embed.json files")
	flag.Parse()
	if err := run(*version, *out); err != nil {
		fmt.Fprintf(os.Stderr, "embedgen: %v\n", err)
		os.Exit(1)
	}
}

func run(version, out string) error {
	if version == "" {
		return fmt.Errorf("-version is required")
	}
	// `go mod download -json` also fetches the module when the module cache lacks it
	// (`go list -m` would only report an empty Dir).
	dlOut, err := exec.Command("go", "mod", "download", "-json", providerModule).Output()
	if err != nil {
		return fmt.Errorf("downloading %s: %w", providerModule, err)
	}
	var module struct{ Dir, Error string }
	if err := json.Unmarshal(dlOut, &module); err != nil {
		return fmt.Errorf("go mod download -json %s: %w", providerModule, err)
	}
	if module.Error != "" || module.Dir == "" {
		return fmt.Errorf("go mod download %s: no module folder (%s)", providerModule, module.Error)
	}
	src := filepath.Join(module.Dir, "cmd", "pulumi-resource-kubernetes")

	var schema map[string]any
	if err := readJSON(filepath.Join(src, "schema.json"), &schema); err != nil {
		return err
	}
	schema["version"] = version
	if err := writeJSON(filepath.Join(out, "schema-embed.json"), schema); err != nil {
		return err
	}
	var mapping any
	if err := readJSON(filepath.Join(src, "terraform-mapping.json"), &mapping); err != nil {
		return err
	}
	return writeJSON(filepath.Join(out, "terraform-mapping-embed.json"), mapping)
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep numbers as written
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
