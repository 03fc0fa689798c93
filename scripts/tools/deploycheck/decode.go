package main

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// decoder decodes objects of the API groups a deployment of Latchkey may use, and
// nothing else: a kind outside them is an error, as a typo in a kind would be.
type decoder struct{ d runtime.Decoder }

func newDecoder() (*decoder, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
		batchv1.AddToScheme, autoscalingv2.AddToScheme, rbacv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	// Strict, as the API server's field validation: unknown and duplicate fields are errors.
	return &decoder{d: serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()}, nil
}

// decode returns the typed object of b (JSON), or why it is not one.
func (d *decoder) decode(b []byte) (runtime.Object, error) {
	obj, gvk, err := d.d.Decode(b, nil, nil)
	switch {
	case err == nil:
		return obj, nil
	case runtime.IsNotRegisteredError(err):
		return nil, fmt.Errorf("unknown kind %s in %s (deploycheck decodes the core, apps, policy, networking, batch, autoscaling and rbac groups)", gvk.Kind, gvk.GroupVersion())
	case gvk != nil:
		// Strict errors (unknown or duplicate fields) and malformed values alike.
		return nil, fmt.Errorf("not a valid %s: %w", gvk.Kind, err)
	default:
		return nil, err
	}
}
