// Package audit writes emberd's audit trail: one structured log line per
// admin action (an endpoint created, a key revoked, an image pulled...),
// with who did it (the key's id and name, never its secret), what, on
// which object, and how it ended.
//
// The lines go through the daemon's slog logger, so under systemd each
// attribute is a journal field of its own (daemon/emberd/journal.go):
// `journalctl -u emberd AUDIT=true` lists the trail, and
// `journalctl -u emberd AUDIT=true KEY_ID=k-...` one key's actions.
package audit

import (
	"context"
	"log/slog"

	"github.com/emberhq/ember/daemon/auth"
)

// Message is the message of every audit line.
const Message = "audit"

// Actions, the "action" attribute of an audit line.
const (
	EndpointCreate = "endpoint.create"
	EndpointUpdate = "endpoint.update"
	EndpointDelete = "endpoint.delete"
	KeyCreate      = "key.create"
	KeyRevoke      = "key.revoke"
	KeyRotateAdmin = "key.rotate-admin"
	ImageImport    = "image.import"
	ImagePull      = "image.pull"
	ImageRemove    = "image.remove"
	QueuePurge     = "queue.purge"
	WorkerStop     = "worker.stop"
	TemplateCreate = "template.create"
	TemplateUpdate = "template.update"
	TemplateDelete = "template.delete"
)

// Record writes one audit line for action on object, by the caller in ctx
// (auth.FromContext; "unknown" when there is none), with outcome "ok" when
// err is nil, else "error" and err's text. attrs are added as they are;
// they must not carry secrets.
func Record(ctx context.Context, log *slog.Logger, action, object string, err error, attrs ...slog.Attr) {
	if log == nil {
		log = slog.Default()
	}
	c, ok := auth.FromContext(ctx)
	id, name, scope := "unknown", "unknown", ""
	if ok {
		id, name, scope = c.KeyID, c.Name, string(c.Scope)
	}
	all := make([]slog.Attr, 0, 8+len(attrs))
	all = append(all,
		slog.Bool("audit", true),
		slog.String("action", action),
		slog.String("object", object),
		slog.String("key_id", id),
		slog.String("key_name", name),
		slog.String("key_scope", scope),
	)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
		all = append(all, slog.String("outcome", "error"), slog.String("err", err.Error()))
	} else {
		all = append(all, slog.String("outcome", "ok"))
	}
	all = append(all, attrs...)
	log.LogAttrs(ctx, level, Message, all...)
}
