package main

import (
	"fmt"

	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// restricted is the Pod Security Standard every pod of the build meets: non-root,
// no privilege escalation, all capabilities dropped, the runtime's seccomp profile,
// and only volume types that grant no host access. The example overlay enforces it
// on its namespace, where a pod that fails it would be refused at deploy time.
var restricted = psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}

// podSecurity tells why w's pods fail the restricted standard, or "".
func (m *model) podSecurity(w *workload) string {
	if m.evaluator == nil {
		ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
		if err != nil {
			return fmt.Sprintf("loading the Pod Security checks: %v", err)
		}
		m.evaluator = ev
	}
	res := policy.AggregateCheckResults(m.evaluator.EvaluatePod(restricted, &w.pod.ObjectMeta, &w.pod.Spec))
	if res.Allowed {
		return ""
	}
	return fmt.Sprintf("its pods fail Pod Security %q: %s", restricted.Level, res.ForbiddenDetail())
}
