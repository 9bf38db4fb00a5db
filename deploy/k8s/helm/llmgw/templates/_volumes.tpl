{{- define "llmgw.promptsVolume" -}}
- name: prompts
  configMap:
    name: {{ include "llmgw.fullname" . }}-prompts
    items:
      {{- range $path, $_ := .Files.Glob "files/prompts/**" }}
      {{- $rel := trimPrefix "files/prompts/" $path }}
      - {key: {{ $rel | replace "/" "__" | quote }}, path: {{ $rel | quote }}}
      {{- end }}
{{- end -}}

{{- define "llmgw.configVolume" -}}
- name: config
  configMap:
    name: {{ include "llmgw.fullname" . }}-config
{{- end -}}
