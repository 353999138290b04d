{{/*
The gateway's Caddyfile: every LiveClass the operator runs, routed per request, so adding,
changing or deleting a class changes no configuration and restarts nothing.

A student connects to ws://<gateway>/<namespace>/<class>/ws. The path names the class (the
token's `class` claim names it the same way, <namespace>/<class>); Caddy takes both parts from
the path and looks up that class's headless Service, <class>-socket-headless.<namespace>.svc,
which the operator creates without publishNotReadyAddresses: cluster DNS answers exactly the
pods whose readiness probe (/readyz) passes, cached gateway.refresh per class. This is how
/readyz gates new students here: Caddy runs no active health checks (health_uri) on dynamic
upstreams. A draining pod turns not-ready and leaves DNS; until the next lookup, the passive
checks (a 503 on the upgrade, a refused dial) skip it, and lb_try_duration retries another pod.

A class that does not exist, or that has no Ready pod yet, has no DNS answer: Caddy then uses the
static upstream, a loopback site of this same Caddy that answers 404 class_not_live as JSON at
once, instead of retrying for lb_try_duration and answering an empty 503.

The proxy options themselves are files/gateway/socket-proxy.caddy, shared with the repository's
local Caddyfile.
*/}}
{{- define "liveclass.gateway.caddyfile" -}}
{
	# The admin API stays on loopback inside the pod.
	admin 127.0.0.1:2019
	# No certificates managed by Caddy, no :80 redirect listener: plain HTTP, with TLS ending in
	# front of the gateway, or HTTPS from the Secret gateway.tls.secretName.
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

# The answer for a class with no Ready pod (see above); loopback only, inside the pod. No host
# in the address: the proxied request keeps the student's Host header, which a host matcher
# would not match.
http://:{{ .Values.gateway.notLivePort }} {
	bind 127.0.0.1
	import json-error.caddy 404 class_not_live "no Ready socket pod serves the class {http.request.header.X-Liveclass-Class}: it does not exist, or it is not warmed up yet (its capacity is Ready from start - warmup)"
}

:{{ .Values.gateway.containerPort }} {
{{- if .Values.gateway.tls.secretName }}
	# HTTPS with the Secret {{ .Values.gateway.tls.secretName }} (tls.crt, tls.key), mounted here.
	import tls-on.caddy /etc/caddy/tls/tls.crt /etc/caddy/tls/tls.key
{{- else }}
	import tls-off.caddy
{{- end }}

	# The gateway's own probes.
	handle /healthz {
		respond "ok" 200
	}

	# /<namespace>/<class>/ws, with the names as Kubernetes allows them (a namespace is a DNS
	# label; a class name is refused at kubectl apply unless it is at most 47 characters and
	# starts with a letter), and with watchNamespace set only that namespace: anything else is
	# not a class here and gets the 404 below.
	@class path_regexp class `^/({{ .Values.watchNamespace | default "[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?" }})/([a-z](?:[-a-z0-9]{0,45}[a-z0-9])?)/ws$`
	handle @class {
		# The socket server serves /ws; the query (the token) is kept.
		rewrite * /ws
		reverse_proxy 127.0.0.1:{{ .Values.gateway.notLivePort }} {
			dynamic a {
				name {re.class.2}-socket-headless.{re.class.1}.svc.{{ .Values.gateway.clusterDomain }}
				port 8080
				refresh {{ .Values.gateway.refresh }}
			}
			# For the not-live answer's message (set here, from the checked path, whatever the
			# client sent).
			header_up X-Liveclass-Class {re.class.1}/{re.class.2}
			import socket-proxy.caddy {{ .Values.gateway.streamCloseDelay }} {{ .Values.gateway.streamBufferSize }}
		}
	}

	# Caddy's own failures (every pod of the class refusing for lb_try_duration) as JSON; the
	# socket servers' own refusals pass through as they are.
	handle_errors 502 503 504 {
		import json-error.caddy {err.status_code} unavailable "no socket pod of the class could take the connection; retry with backoff"
	}

	# Anything else, the socket pods' /metrics and admin endpoints among it: not here.
	handle {
		import json-error.caddy 404 not_found "the gateway serves /<namespace>/<class>/ws only"
	}
}
{{- end }}
