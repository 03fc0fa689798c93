package main

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Settings whose values are addresses of other objects of the build.
const (
	natsURL      = "LATCHKEY_NATS_URL"
	natsReplicas = "LATCHKEY_NATS_REPLICAS"
	redisURL     = "LATCHKEY_REDIS_URL"
)

// peerAddrs are the host:port settings by which services reach each other.
var peerAddrs = []string{"LATCHKEY_REGISTRY_ADDR", "LATCHKEY_VAULT_ADDR", "LATCHKEY_SCHEDULER_ADDR"}

// envVar is one variable of a container; value is known when it comes from the
// manifests (a literal or a ConfigMap), not from a Secret or the downward API.
type envVar struct {
	value string
	known bool
}

// checkEnv: every LATCHKEY_* variable of c is a setting libs/config reads; every
// ConfigMap and Secret it refers to (and the key) is in the build; and the
// addresses it holds name Services of the build.
func (m *model) checkEnv(w *workload, c *corev1.Container, s Settings) []error {
	vars, errs := m.resolveEnv(w, c)
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		if strings.HasPrefix(name, "LATCHKEY_") && !s.Env[name] {
			errs = append(errs, fmt.Errorf("%s: container %s: %s is not a setting of libs/config (a typo, or a setting that was renamed or removed)", w.id, c.Name, name))
		}
	}
	servers, err := m.checkAddresses(w, vars)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: container %s: %w", w.id, c.Name, err))
	}
	if v := vars[natsReplicas]; v.known && servers > 0 {
		if n, err := strconv.Atoi(v.value); err == nil && int32(n) > servers {
			errs = append(errs, fmt.Errorf("%s: container %s: %s=%d, but %s reaches %d NATS servers: JetStream cannot keep more copies than servers",
				w.id, c.Name, natsReplicas, n, natsURL, servers))
		}
	}
	return errs
}

// resolveEnv returns c's variables as the kubelet would set them (envFrom first, then
// env, later ones winning), with what is wrong with the references.
func (m *model) resolveEnv(w *workload, c *corev1.Container) (map[string]envVar, []error) {
	vars := map[string]envVar{}
	var errs []error
	missing := func(what string) {
		errs = append(errs, fmt.Errorf("%s: container %s: %s is not in the build", w.id, c.Name, what))
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := m.configMaps[w.namespace+"/"+from.ConfigMapRef.Name]
			if cm == nil {
				if !optional(from.ConfigMapRef.Optional) {
					missing("ConfigMap " + from.ConfigMapRef.Name)
				}
				continue
			}
			for k, v := range cm.Data {
				vars[from.Prefix+k] = envVar{value: v, known: true}
			}
		case from.SecretRef != nil:
			sec := m.secrets[w.namespace+"/"+from.SecretRef.Name]
			if sec == nil {
				if !optional(from.SecretRef.Optional) {
					missing("Secret " + from.SecretRef.Name)
				}
				continue
			}
			for _, k := range secretKeys(sec) {
				vars[from.Prefix+k] = envVar{}
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = envVar{value: e.Value, known: true}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := m.configMaps[w.namespace+"/"+ref.Name]
			v, ok := "", false
			if cm != nil {
				v, ok = cm.Data[ref.Key]
			}
			if !ok && !optional(ref.Optional) {
				missing(fmt.Sprintf("ConfigMap %s key %s (for %s)", ref.Name, ref.Key, e.Name))
			}
			vars[e.Name] = envVar{value: v, known: ok}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			sec := m.secrets[w.namespace+"/"+ref.Name]
			if (sec == nil || !slices.Contains(secretKeys(sec), ref.Key)) && !optional(ref.Optional) {
				missing(fmt.Sprintf("Secret %s key %s (for %s)", ref.Name, ref.Key, e.Name))
			}
			vars[e.Name] = envVar{}
		default:
			vars[e.Name] = envVar{}
		}
	}
	return vars, errs
}

func optional(p *bool) bool { return p != nil && *p }

func secretKeys(s *corev1.Secret) []string {
	keys := slices.Collect(maps.Keys(s.Data))
	for k := range s.StringData {
		keys = append(keys, k)
	}
	return keys
}

// checkAddresses checks the hosts of the address settings in vars, and returns how
// many NATS servers the NATS URLs reach (0 when unknown).
func (m *model) checkAddresses(w *workload, vars map[string]envVar) (int32, error) {
	type target struct{ setting, host, port string }
	var targets []target
	addURL := func(setting, raw, defPort string) error {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Hostname() == "" {
			return fmt.Errorf("%s: %q is not a URL with a host", setting, raw)
		}
		port := u.Port()
		if port == "" {
			port = defPort
		}
		targets = append(targets, target{setting, u.Hostname(), port})
		return nil
	}
	if v := vars[natsURL]; v.known && v.value != "" {
		for _, raw := range strings.Split(v.value, ",") {
			if err := addURL(natsURL, raw, "4222"); err != nil {
				return 0, err
			}
		}
	}
	if v := vars[redisURL]; v.known && v.value != "" {
		if err := addURL(redisURL, v.value, "6379"); err != nil {
			return 0, err
		}
	}
	for _, name := range peerAddrs {
		if v := vars[name]; v.known && v.value != "" {
			host, port, err := net.SplitHostPort(v.value)
			if err != nil {
				return 0, fmt.Errorf("%s: %q is not host:port: %w", name, v.value, err)
			}
			targets = append(targets, target{name, host, port})
		}
	}
	natsBackends := map[*workload]bool{}
	for _, t := range targets {
		port, err := strconv.Atoi(t.port)
		if err != nil {
			return 0, fmt.Errorf("%s: port %q is not a number", t.setting, t.port)
		}
		backs, err := m.resolveHost(w.namespace, t.host, int32(port))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t.setting, err)
		}
		if t.setting == natsURL {
			for _, b := range backs {
				natsBackends[b] = true
			}
		}
	}
	var servers int32
	for b := range natsBackends {
		servers += b.replicas
	}
	return servers, nil
}

// resolveHost finds what host:port reaches from a pod in namespace: a Service of the
// build by its short name (and one of its ports), or a StatefulSet's pod by
// <pod>.<headless service> (and a port its containers declare). Other names (IP
// addresses, other namespaces, outside the cluster) are not checked.
func (m *model) resolveHost(namespace, host string, port int32) ([]*workload, error) {
	if net.ParseIP(host) != nil {
		return nil, nil
	}
	parts := strings.Split(host, ".")
	switch len(parts) {
	case 1:
		svc := m.service(namespace, host)
		if svc == nil {
			return nil, fmt.Errorf("host %q is no Service of the build%s", host, inNamespace(namespace))
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port }) {
			return nil, fmt.Errorf("Service %s has no port %d", host, port)
		}
		return m.selected(svc), nil
	case 2:
		pod, svcName := parts[0], parts[1]
		svc := m.service(namespace, svcName)
		if svc == nil {
			return nil, nil // <service>.<namespace>: another namespace
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			return nil, fmt.Errorf("host %q: Service %s is not headless, so it names no pods", host, svcName)
		}
		for _, w := range m.workloads {
			if w.kind != "StatefulSet" || w.namespace != namespace || w.headless != svcName {
				continue
			}
			for i := range w.replicas {
				if pod == fmt.Sprintf("%s-%d", w.name, i) {
					if !declaresPort(w.pod.Spec.Containers, "", port) {
						return nil, fmt.Errorf("host %q: no container of %s declares port %d", host, w.id, port)
					}
					return []*workload{w}, nil
				}
			}
		}
		return nil, fmt.Errorf("host %q is no pod of a StatefulSet governed by Service %s", host, svcName)
	default:
		return nil, nil
	}
}

func inNamespace(ns string) string {
	if ns == "" {
		return ""
	}
	return " in namespace " + ns
}
