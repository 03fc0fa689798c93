package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Report counts the objects of a build that passed, by kind, and holds the build.
type Report struct {
	Kinds map[string]int
	// YAML is the build, as `kubectl kustomize` prints it.
	YAML []byte
}

func (r Report) String() string {
	total, parts := 0, []string{}
	for _, k := range slices.Sorted(maps.Keys(r.Kinds)) {
		total += r.Kinds[k]
		parts = append(parts, fmt.Sprintf("%s %d", k, r.Kinds[k]))
	}
	return fmt.Sprintf("%d objects: %s", total, strings.Join(parts, ", "))
}

// Check builds the kustomization in dir from fsys, decodes every object strictly and
// applies the rules. The error lists every problem found, each naming its object.
func Check(fsys filesys.FileSystem, dir string, s Settings) (Report, error) {
	rep := Report{Kinds: map[string]int{}}
	objs, err := build(fsys, dir)
	if err != nil {
		return rep, err
	}
	dec, err := newDecoder()
	if err != nil {
		return rep, err
	}
	m := newModel()
	var problems []error
	for _, o := range objs {
		rep.YAML = append(append(rep.YAML, "---\n"...), o.yaml...)
		obj, err := dec.decode(o.json)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", o.id, err))
			continue
		}
		m.add(o.id, obj)
		rep.Kinds[obj.GetObjectKind().GroupVersionKind().Kind]++
	}
	problems = append(problems, m.check(s)...)
	return rep, errors.Join(problems...)
}

// workload is a Deployment or StatefulSet: what the rules need of either.
type workload struct {
	id, kind, namespace, name string
	replicas                  int32
	selector                  *metav1.LabelSelector
	pod                       *corev1.PodTemplateSpec
	// headless is a StatefulSet's governing Service, which names its pods in DNS.
	headless string
}

// model is a build's objects, indexed for the rules.
type model struct {
	workloads  []*workload
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	configMaps map[string]*corev1.ConfigMap // by namespace/name
	secrets    map[string]*corev1.Secret
	evaluator  policy.Evaluator // Pod Security, made on first use
}

func newModel() *model {
	return &model{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
}

func (m *model) add(id string, obj runtime.Object) {
	replicas := func(p *int32) int32 {
		if p == nil {
			return 1
		}
		return *p
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		m.workloads = append(m.workloads, &workload{id: id, kind: "Deployment", namespace: o.Namespace, name: o.Name,
			replicas: replicas(o.Spec.Replicas), selector: o.Spec.Selector, pod: &o.Spec.Template})
	case *appsv1.StatefulSet:
		m.workloads = append(m.workloads, &workload{id: id, kind: "StatefulSet", namespace: o.Namespace, name: o.Name,
			replicas: replicas(o.Spec.Replicas), selector: o.Spec.Selector, pod: &o.Spec.Template, headless: o.Spec.ServiceName})
	case *corev1.Service:
		m.services = append(m.services, o)
	case *policyv1.PodDisruptionBudget:
		m.pdbs = append(m.pdbs, o)
	case *corev1.ConfigMap:
		m.configMaps[o.Namespace+"/"+o.Name] = o
	case *corev1.Secret:
		m.secrets[o.Namespace+"/"+o.Name] = o
	}
}

func (m *model) check(s Settings) []error {
	var errs []error
	for _, w := range m.workloads {
		errs = append(errs, m.checkWorkload(w, s)...)
	}
	for _, svc := range m.services {
		errs = append(errs, m.checkService(svc)...)
	}
	return errs
}

// matches tells whether sel selects pods labelled lbls. A nil or empty selector
// selects nothing here: the API server refuses it on workloads and PDBs.
func matches(sel *metav1.LabelSelector, lbls map[string]string) bool {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(lbls))
}

func (m *model) service(namespace, name string) *corev1.Service {
	for _, svc := range m.services {
		if svc.Namespace == namespace && svc.Name == name {
			return svc
		}
	}
	return nil
}

// selected returns the workloads whose pods svc routes to.
func (m *model) selected(svc *corev1.Service) []*workload {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []*workload
	for _, w := range m.workloads {
		if w.namespace == svc.Namespace && sel.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// checkService: a Service with a selector routes to some pod of the build, and a
// named target port is a port those pods declare.
func (m *model) checkService(svc *corev1.Service) []error {
	if len(svc.Spec.Selector) == 0 {
		return nil // endpoints managed elsewhere
	}
	id := "Service " + qualified(svc.Namespace, svc.Name)
	ws := m.selected(svc)
	if len(ws) == 0 {
		return []error{fmt.Errorf("%s: its selector %v matches the pods of no workload in the build", id, svc.Spec.Selector)}
	}
	var errs []error
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.Type != intstr.String || p.TargetPort.StrVal == "" { // a number: any port may listen
			continue
		}
		for _, w := range ws {
			if !declaresPort(w.pod.Spec.Containers, p.TargetPort.StrVal, 0) {
				errs = append(errs, fmt.Errorf("%s: port %q targets %q, which no container of %s names", id, p.Name, p.TargetPort.StrVal, w.id))
			}
		}
	}
	return errs
}

// declaresPort tells whether a container declares a port of that name (if not empty)
// or number (if not 0).
func declaresPort(cs []corev1.Container, name string, number int32) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			if (name != "" && p.Name == name) || (number != 0 && p.ContainerPort == number) {
				return true
			}
		}
	}
	return false
}

func qualified(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
