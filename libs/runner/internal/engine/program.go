package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"

	"github.com/latchkey/latchkey/libs/domain"
	runnerv1 "github.com/latchkey/latchkey/libs/gen/latchkey/runner/v1"
	"github.com/latchkey/latchkey/libs/recipe"
	"github.com/latchkey/latchkey/libs/runner/internal/sdk"
)

// program is what runs for one API: a registered Go handler or a bundle's recipe.
type program struct {
	api     string
	handler sdk.Handler
	recipe  *recipe.API
	vars    map[string]string
}

// program finds the handler or recipe of api for task.
func (r *Runner) program(ctx context.Context, task *runnerv1.RunnerTask, api string) (*program, error) {
	vars, err := r.vars.get(ctx, task.GetProjectId(), task.GetSession().GetAuthSessionId())
	if err != nil {
		return nil, err
	}
	if h := r.handler(api); h != nil {
		return &program{api: api, handler: h, vars: maps.Clone(vars)}, nil
	}
	b, version, err := r.bundles.get(ctx, task.GetProjectId(), task.GetSite(), task.GetBundleVersion())
	if err != nil {
		return nil, err
	}
	a := b.APIs[api]
	if a == nil {
		return nil, sdk.Fail(reasonScript, "bundle version %d has no API %q; deploy a bundle that defines it", version, api)
	}
	merged := maps.Clone(b.Vars)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, vars)
	return &program{api: api, recipe: a, vars: merged}, nil
}

// credentials fetches a create's credentials: a vault secret, or runtime credentials
// the vault sealed for the Run they were passed with.
func (r *Runner) credentials(ctx context.Context, task *runnerv1.RunnerTask) (sdk.Credentials, error) {
	ref := task.GetCredentials()
	if r.deps.Vault == nil || ref == nil {
		return sdk.Credentials{}, nil
	}
	switch {
	case ref.GetSecretId() != "":
		fields, err := r.deps.Vault.Secret(ctx, task.GetProjectId(), ref.GetSecretId(), task.GetRunId())
		if err != nil {
			return nil, err
		}
		return sdk.Credentials(fields), nil
	case len(ref.GetCiphertext()) > 0:
		runID := cmp.Or(ref.GetCiphertextRunId(), task.GetRunId())
		plain, err := r.deps.Vault.Open(ctx, sdk.Sealed{Project: task.GetProjectId(), Kind: domain.KindRuntimeCredentials, ID: runID}, ref.GetCiphertext(), task.GetRunId())
		if err != nil {
			return nil, err
		}
		fields, err := decodeFields(plain)
		if err != nil {
			return nil, sdk.Fail(reasonScript, "the runtime credentials are not a JSON object of strings")
		}
		return sdk.Credentials(fields), nil
	}
	return sdk.Credentials{}, nil
}

// decodeFields decodes a sealed JSON object of strings (runtime credentials, resume
// answers).
func decodeFields(b []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.New("not a JSON object of strings")
	}
	return m, nil
}
