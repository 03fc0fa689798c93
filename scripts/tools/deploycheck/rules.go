package main

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// checkWorkload applies the rules a user of the manifests relies on to one
// Deployment or StatefulSet.
func (m *model) checkWorkload(w *workload, s Settings) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(w.id+": "+format, args...))
	}
	if !matches(w.selector, w.pod.Labels) {
		fail("its selector does not match its pod template's labels")
	}
	if msg := m.podSecurity(w); msg != "" {
		fail("%s", msg)
	}
	for i := range w.pod.Spec.Containers {
		c := &w.pod.Spec.Containers[i]
		for _, msg := range containerProblems(c) {
			fail("container %s: %s", c.Name, msg)
		}
		if len(c.Args) > 0 && c.Args[0] == "serve" && (len(c.Args) < 2 || !slices.Contains(s.Services, c.Args[1])) {
			fail("container %s: `latchkey %v` names no service; `latchkey serve` runs one of %v", c.Name, c.Args, s.Services)
		}
		errs = append(errs, m.checkEnv(w, c, s)...)
	}
	if w.replicas > 1 {
		if msg := m.disruptionProblem(w); msg != "" {
			fail("%s", msg)
		}
		if !spreads(w) {
			fail("%d replicas, but no pod anti-affinity (or topology spread) term with a topologyKey selects its own pods, so all may land on one node", w.replicas)
		}
	}
	return errs
}

// containerProblems: probes that tell Kubernetes when to route to a container and
// when to restart it, on ports it declares, and the resources the scheduler places
// it by, with a memory limit so a runaway process cannot take the node.
func containerProblems(c *corev1.Container) []string {
	var out []string
	if c.ReadinessProbe == nil {
		out = append(out, "no readinessProbe")
	}
	if c.LivenessProbe == nil {
		out = append(out, "no livenessProbe")
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		if name := probePortName(p); name != "" && !declaresPort([]corev1.Container{*c}, name, 0) {
			out = append(out, fmt.Sprintf("a probe uses port %q, which the container does not declare", name))
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			out = append(out, fmt.Sprintf("no %s request", r))
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		out = append(out, "no memory limit")
	}
	return out
}

func probePortName(p *corev1.Probe) string {
	if p == nil {
		return ""
	}
	var port intstr.IntOrString
	switch {
	case p.HTTPGet != nil:
		port = p.HTTPGet.Port
	case p.TCPSocket != nil:
		port = p.TCPSocket.Port
	default:
		return ""
	}
	if port.Type == intstr.String {
		return port.StrVal
	}
	return ""
}

// disruptionProblem: a workload with replicas has a PodDisruptionBudget that selects
// its pods and still lets a node drain (at least one pod may go).
func (m *model) disruptionProblem(w *workload) string {
	found := false
	for _, pdb := range m.pdbs {
		if pdb.Namespace != w.namespace || !matches(pdb.Spec.Selector, w.pod.Labels) {
			continue
		}
		found = true
		n := int(w.replicas)
		switch {
		case pdb.Spec.MaxUnavailable != nil:
			v, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, n, true)
			if err != nil || v < 1 {
				return fmt.Sprintf("PodDisruptionBudget %s lets none of its %d pods go (maxUnavailable %s): a node drain would hang", pdb.Name, n, pdb.Spec.MaxUnavailable)
			}
		case pdb.Spec.MinAvailable != nil:
			v, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, n, true)
			if err != nil || v >= n {
				return fmt.Sprintf("PodDisruptionBudget %s lets none of its %d pods go (minAvailable %s): a node drain would hang", pdb.Name, n, pdb.Spec.MinAvailable)
			}
		default:
			return fmt.Sprintf("PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", pdb.Name)
		}
	}
	if !found {
		return fmt.Sprintf("%d replicas, but no PodDisruptionBudget selects its pods: a node drain may stop them all at once", w.replicas)
	}
	return ""
}

// spreads tells whether w's pods keep apart: a pod anti-affinity term (required or
// preferred) or a topology spread constraint over a topology key, selecting its own pods.
func spreads(w *workload) bool {
	spec := w.pod.Spec
	for _, t := range spec.TopologySpreadConstraints {
		if t.TopologyKey != "" && matches(t.LabelSelector, w.pod.Labels) {
			return true
		}
	}
	if spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil {
		return false
	}
	anti := spec.Affinity.PodAntiAffinity
	terms := slices.Clone(anti.RequiredDuringSchedulingIgnoredDuringExecution)
	for _, p := range anti.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, p.PodAffinityTerm)
	}
	for _, t := range terms {
		if t.TopologyKey != "" && len(t.Namespaces) == 0 && t.NamespaceSelector == nil && matches(t.LabelSelector, w.pod.Labels) {
			return true
		}
	}
	return false
}
