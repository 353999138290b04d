{{/*
The gateway's Caddyfile: one route per LiveClass in gateway.classes, each proxying to the Ready
socket pods of that class.

Upstreams: `dynamic a` looks up the class's headless Service (<class>-socket-headless), which
the operator creates without publishNotReadyAddresses, so cluster DNS returns exactly the pods
whose readiness probe (/readyz) passes, refreshed every gateway.refresh. This is how /readyz
gates new students here: Caddy does not run its own active health checks (health_uri) on
dynamic upstreams (caddyhttp/reverseproxy: "Active health checks do not run for dynamic
upstreams"), so a health_uri line would do nothing. A draining pod turns not-ready and leaves
DNS; until the next refresh, the passive checks below (a 503 on the upgrade, a refused dial)
skip it, and lb_try_duration retries another pod within the same request.
*/}}
{{- define "liveclass.gateway.caddyfile" -}}
{
	# The admin API stays on loopback inside the pod.
	admin 127.0.0.1:2019
	# Plain HTTP: TLS ends in front of the gateway (an Ingress or a cloud load balancer).
	auto_https off
	# On shutdown, plain HTTP requests get this long; upgraded WebSockets follow
	# stream_close_delay.
	grace_period 5s
	servers {
		timeouts {
			# WebSockets are long-lived: only a client that never finishes its headers is cut.
			read_header 10s
		}
	}
}

:{{ .Values.gateway.containerPort }} {
	# The gateway's own probes.
	handle /healthz {
		respond "ok" 200
	}
{{- range .Values.gateway.classes }}
{{- $namespace := default $.Release.Namespace .namespace }}
{{- $prefix := default (printf "/%s/%s" $namespace .name) .pathPrefix | trimSuffix "/" }}

	# LiveClass {{ $namespace }}/{{ .name }}: ws://<gateway>{{ $prefix }}/ws
	handle_path {{ $prefix }}/* {
		reverse_proxy {
			dynamic a {
				name {{ printf "%s-socket-headless.%s.svc.%s" .name $namespace $.Values.gateway.clusterDomain }}
				port 8080
				refresh {{ $.Values.gateway.refresh }}
				dial_timeout 2s
			}
			# A WebSocket counts as one request for its whole life, so least_conn evens out
			# the students per pod after a scale-out.
			lb_policy least_conn
			# A refused dial or a draining pod's 503 is retried on another pod.
			lb_try_duration 5s
			lb_try_interval 100ms
			fail_duration 5s
			max_fails 1
			unhealthy_status 503
			# WebSocket frames are flushed at once; upgraded streams survive a config reload
			# this long instead of all closing together.
			flush_interval -1
			stream_close_delay {{ $.Values.gateway.streamCloseDelay }}
			stream_buffer_size {{ $.Values.gateway.streamBufferSize }}
			transport http {
				dial_timeout 2s
			}
		}
	}
{{- end }}

	handle {
		respond "no such class" 404
	}
}
{{- end }}
