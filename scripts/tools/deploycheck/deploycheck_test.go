package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The repository's own manifests pass, built from the files as committed.
func TestRepositoryManifestsPass(t *testing.T) {
	repo := filepath.Join("..", "..", "..")
	var out bytes.Buffer
	err := run([]string{
		"-root", filepath.Join(repo, "deploy"),
		"-config", filepath.Join(repo, "libs", "config"),
		"-stack", filepath.Join(repo, "internal", "stack", "stack.go"),
		filepath.Join(repo, "deploy", "kubernetes", "overlays", "example"),
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(strings.TrimSpace(out.String()))
}

func TestSettingsAreReadFromTheSource(t *testing.T) {
	repo := filepath.Join("..", "..", "..")
	s, err := LoadSettings(filepath.Join(repo, "libs", "config"), filepath.Join(repo, "internal", "stack", "stack.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"LATCHKEY_NATS_URL", "LATCHKEY_NATS_REPLICAS", "LATCHKEY_INTERNAL_TOKEN", "LATCHKEY_VAULT_KEYS"} {
		if !s.Env[name] {
			t.Errorf("%s not found among the settings %v", name, s.Env)
		}
	}
	if got := strings.Join(s.Services, ","); got != "registry,runner,scheduler,vault" {
		t.Errorf("services = %s", got)
	}
}

// fixture is a small deployment that passes every rule: a service with two replicas
// (PDB, anti-affinity, probes, resources) reaching a 3-node StatefulSet.
const fixtureKustomization = `
resources: [app.yaml]
secretGenerator:
  - name: secrets
    literals: [internal-token=x]
configMapGenerator:
  - name: cfg
    literals:
      - LATCHKEY_NATS_URL=nats://nats-0.nats:4222,nats://nats-1.nats:4222,nats://nats-2.nats:4222
      - LATCHKEY_NATS_REPLICAS=3
`

const fixtureApp = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: vault}
spec:
  replicas: 2
  selector: {matchLabels: {app: vault}}
  template:
    metadata: {labels: {app: vault}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: vault}}}
      containers:
        - name: vault
          image: latchkey
          args: ["serve", "vault"]
          envFrom: [{configMapRef: {name: cfg}}]
          env:
            - {name: LATCHKEY_VAULT_ADDR, value: "vault:7400"}
            - name: LATCHKEY_INTERNAL_TOKEN
              valueFrom: {secretKeyRef: {name: secrets, key: internal-token}}
          ports: [{name: grpc, containerPort: 7400}, {name: http, containerPort: 7480}]
          readinessProbe: {httpGet: {path: /healthz, port: http}}
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: vault}
spec:
  selector: {app: vault}
  ports: [{name: grpc, port: 7400, targetPort: grpc}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: vault}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: vault}}
---
apiVersion: v1
kind: Service
metadata: {name: nats}
spec:
  clusterIP: None
  selector: {app: nats}
  ports: [{name: client, port: 4222, targetPort: client}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: nats}
spec:
  serviceName: nats
  replicas: 3
  selector: {matchLabels: {app: nats}}
  template:
    metadata: {labels: {app: nats}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: nats}}}
      containers:
        - name: nats
          image: nats:2.12-alpine
          ports: [{name: client, containerPort: 4222}, {name: monitor, containerPort: 8222}]
          readinessProbe: {httpGet: {path: /healthz, port: monitor}}
          livenessProbe: {httpGet: {path: /healthz, port: monitor}}
          resources: {requests: {cpu: 250m, memory: 512Mi}, limits: {memory: 1Gi}}
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: nats}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: nats}}
`

var fixtureSettings = Settings{
	Env: map[string]bool{
		"LATCHKEY_NATS_URL": true, "LATCHKEY_NATS_REPLICAS": true, "LATCHKEY_VAULT_ADDR": true, "LATCHKEY_INTERNAL_TOKEN": true,
	},
	Services: []string{"registry", "runner", "scheduler", "vault"},
}

// The check fails, naming the problem, on each way a manifest can be broken.
func TestBrokenManifestsFail(t *testing.T) {
	for _, tc := range []struct {
		name      string
		old, new  string // replaced once in the fixture's app.yaml or kustomization
		wantError string // "" for no error
	}{
		{"the fixture passes", "", "", ""},
		{"unknown field", "readinessProbe: {httpGet: {path: /healthz, port: http}}", "readinesProbe: {httpGet: {path: /healthz, port: http}}",
			`unknown field "spec.template.spec.containers[0].readinesProbe"`},
		{"field of the wrong case", "containerPort: 7400", "ContainerPort: 7400", `unknown field "spec.template.spec.containers[0].ports[0].ContainerPort"`},
		{"unknown kind", "kind: PodDisruptionBudget\nmetadata: {name: vault}", "kind: PodDisruptionBudgt\nmetadata: {name: vault}", "unknown kind"},
		{"malformed quantity", "memory: 64Mi", "memory: 64MB", "Deployment vault: not a valid Deployment"},
		{"missing readiness probe", "readinessProbe: {httpGet: {path: /healthz, port: http}}", "", "container vault: no readinessProbe"},
		{"missing liveness probe", "livenessProbe: {httpGet: {path: /healthz, port: http}}", "", "container vault: no livenessProbe"},
		{"probe on an undeclared port", "livenessProbe: {httpGet: {path: /healthz, port: http}}", "livenessProbe: {httpGet: {path: /healthz, port: metrics}}", `uses port "metrics"`},
		{"no resource requests", "requests: {cpu: 50m, memory: 64Mi}, ", "", "container vault: no cpu request"},
		{"no memory limit", "resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}", "resources: {requests: {cpu: 50m, memory: 64Mi}}", "no memory limit"},
		{"replicas without a PDB", "maxUnavailable: 1\n  selector: {matchLabels: {app: vault}}", "maxUnavailable: 1\n  selector: {matchLabels: {app: other}}", "Deployment vault: 2 replicas, but no PodDisruptionBudget"},
		{"a PDB that blocks drains", "maxUnavailable: 1\n  selector: {matchLabels: {app: vault}}", "minAvailable: 2\n  selector: {matchLabels: {app: vault}}", "lets none of its 2 pods go"},
		{"replicas without anti-affinity", "podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: vault}}}", "podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: other}}}", "Deployment vault: 2 replicas, but no pod anti-affinity"},
		{"selector that misses its pods", "selector: {matchLabels: {app: vault}}\n  template", "selector: {matchLabels: {app: vaults}}\n  template", "its selector does not match"},
		{"unknown setting", "{name: LATCHKEY_VAULT_ADDR, value", "{name: LATCHKEY_VAULT_ADRR, value", "LATCHKEY_VAULT_ADRR is not a setting of libs/config"},
		{"address of a missing Service", `value: "vault:7400"`, `value: "valt:7400"`, `LATCHKEY_VAULT_ADDR: host "valt" is no Service`},
		{"address on a port the Service lacks", `value: "vault:7400"`, `value: "vault:7401"`, "Service vault has no port 7401"},
		{"NATS URL to a pod that does not exist", "nats://nats-2.nats:4222", "nats://nats-3.nats:4222", `host "nats-3.nats" is no pod`},
		{"more NATS replicas than servers", "LATCHKEY_NATS_REPLICAS=3", "LATCHKEY_NATS_REPLICAS=5", "reaches 3 NATS servers"},
		{"a Secret that is not in the build", "secretKeyRef: {name: secrets, key: internal-token}", "secretKeyRef: {name: secrets, key: token}", "key token (for LATCHKEY_INTERNAL_TOKEN) is not in the build"},
		{"a pod that may run as root", "securityContext: {runAsNonRoot: true, seccompProfile", "securityContext: {seccompProfile", `Deployment vault: its pods fail Pod Security "restricted": runAsNonRoot != true`},
		{"a container that keeps capabilities", "capabilities: {drop: [ALL]}}\n---\napiVersion: v1\nkind: Service", "capabilities: {drop: [ALL], add: [NET_ADMIN]}}\n---\napiVersion: v1\nkind: Service", `must not include "NET_ADMIN"`},
		{"serve of no service", `args: ["serve", "vault"]`, `args: ["serve", "vaults"]`, "names no service"},
		{"a Service selecting nothing", "selector: {app: vault}", "selector: {app: valt}", "Service vault: its selector"},
		{"a Service port naming no container port", "targetPort: grpc", "targetPort: grcp", `targets "grcp"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kust, app := fixtureKustomization, fixtureApp
			if tc.old != "" {
				switch {
				case strings.Count(app, tc.old) == 1:
					app = strings.Replace(app, tc.old, tc.new, 1)
				case strings.Count(kust, tc.old) == 1:
					kust = strings.Replace(kust, tc.old, tc.new, 1)
				default:
					t.Fatalf("%q is not in the fixture exactly once", tc.old)
				}
			}
			fsys := filesys.MakeFsInMemory()
			for name, body := range map[string]string{"/k/kustomization.yaml": kust, "/k/app.yaml": app} {
				if err := fsys.WriteFile(name, []byte(body)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Check(fsys, "/k", fixtureSettings)
			if err != nil {
				t.Log(err)
			}
			switch {
			case tc.wantError == "" && err != nil:
				t.Fatalf("want no error, got:\n%v", err)
			case tc.wantError != "" && err == nil:
				t.Fatalf("want an error with %q, got none", tc.wantError)
			case tc.wantError != "" && !strings.Contains(err.Error(), tc.wantError):
				t.Fatalf("want an error with %q, got:\n%v", tc.wantError, err)
			}
		})
	}
}

// A committed X.example stands in for a missing X, and never hides a present X.
func TestExampleFilesStandIn(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := filesys.MakeFsOnDisk().WriteFile(filepath.Join(dir, name), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	write("a.env.example", "k=example")
	write("b.env.example", "k=example")
	write("b.env", "k=real")
	mem, err := LoadTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a.env": "k=example", "b.env": "k=real"} {
		got, err := mem.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
}
