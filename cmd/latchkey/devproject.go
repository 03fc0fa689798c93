package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/latchkey/latchkey/libs/client"
	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
	"github.com/latchkey/latchkey/libs/server"
)

// DevProject is the project `latchkey dev` creates on first start.
const DevProject = "default"

// ensureDevProject makes sure the dev project exists and that DevAPIKeyFile in dataDir
// holds a working key for it, through the public API with the admin key. It returns
// true when it wrote a new key.
func ensureDevProject(ctx context.Context, addr, adminKey, dataDir string, tlsCfg *tls.Config) (bool, error) {
	path := filepath.Join(dataDir, DevAPIKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		if ok, err := keyWorks(ctx, addr, strings.TrimSpace(string(b)), tlsCfg); ok || err != nil {
			return false, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	cl, err := client.Dial(addr, client.Options{APIKey: adminKey, TLS: tlsCfg, Header: map[string]string{server.ServiceHeader: "latchkey-dev"}})
	if err != nil {
		return false, err
	}
	defer cl.Close()
	pc := cl.Projects
	var secret string
	resp, err := pc.CreateProject(ctx, &latchkeyv1.CreateProjectRequest{ProjectId: DevProject, DisplayName: "Default project"})
	switch status.Code(err) {
	case codes.OK:
		secret = resp.GetApiKeySecret()
	case codes.AlreadyExists:
		k, err := pc.CreateApiKey(ctx, &latchkeyv1.CreateApiKeyRequest{ProjectId: DevProject, Name: "dev"})
		if err != nil {
			return false, fmt.Errorf("creating the dev API key: %w", err)
		}
		secret = k.GetApiKeySecret()
	default:
		return false, fmt.Errorf("creating the %s project: %w", DevProject, err)
	}
	if err := writeSecretFile(path, secret); err != nil {
		return false, err
	}
	return true, nil
}

// keyWorks reports whether key is accepted by the API; false (and no error) when it is
// unknown, revoked or empty.
func keyWorks(ctx context.Context, addr, key string, tlsCfg *tls.Config) (bool, error) {
	if key == "" {
		return false, nil
	}
	cl, err := client.Dial(addr, client.Options{APIKey: key, TLS: tlsCfg, Header: map[string]string{server.ServiceHeader: "latchkey-dev"}})
	if err != nil {
		return false, err
	}
	defer cl.Close()
	_, err = cl.Projects.GetProject(ctx, &latchkeyv1.GetProjectRequest{})
	switch status.Code(err) {
	case codes.OK:
		return true, nil
	case codes.Unauthenticated, codes.NotFound:
		return false, nil
	}
	return false, fmt.Errorf("checking the dev API key: %w", err)
}

// writeSecretFile replaces path with secret, mode 0600.
func writeSecretFile(path, secret string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
