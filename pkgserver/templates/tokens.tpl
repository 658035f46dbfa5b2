% rebase('layout', L=L)
<h1>API tokens of {{user}}</h1>
% if secret:
<section class="new-token">
  <p><strong>Your new token</strong> (shown once: copy it now; it is not kept and cannot be shown again):</p>
  <pre><code>{{secret}}</code></pre>
  <p>Use it as the password with the user name <code>__token__</code>, e.g. in <code>~/.pypirc</code> or <code>uv publish --token</code>.</p>
</section>
% end
% if notice:
<p class="notice">{{notice}}</p>
% end
% if tokens:
<table class="tokens">
  <thead><tr><th>Token</th><th>Description</th><th>May</th><th>Projects</th><th>Created</th><th>Last used</th><th>Expires</th><th></th></tr></thead>
  <tbody>
  % for t in tokens:
  <tr>
    <td><code>pkgserver-{{t.id}}-…</code></td>
    <td>{{t.description or '—'}}</td>
    <td>{{', '.join(t.actions)}}</td>
    <td>{{', '.join(t.projects) or 'all you may'}}</td>
    <td>{{when(t.created)}}</td>
    <td>{{when(t.last_used) if t.last_used else 'never'}}</td>
    <td>{{('expired ' if t.expired(now) else '') + when(t.expires) if t.expires else 'never'}}</td>
    <td>
      <form method="post" action="revoke">
        <input type="hidden" name="id" value="{{t.id}}">
        <button type="submit">Revoke</button>
      </form>
    </td>
  </tr>
  % end
  </tbody>
</table>
% else:
<p>You have no tokens.</p>
% end
<h2>New token</h2>
<form method="post" action="create" class="new-token">
  <p>
  % for action in actions:
    <label><input type="checkbox" name="action" value="{{action}}"{{' checked' if action == 'upload' else ''}}> {{action}}</label>
  % end
  </p>
  <p><label>Projects (names or patterns such as <code>acme-*</code>, separated by spaces; empty: all you may)<br>
    <input type="text" name="projects" maxlength="1000" size="60"></label></p>
  <p><label>Expires in
    <select name="expires">
      <option value="30d">30 days</option>
      <option value="90d" selected>90 days</option>
      <option value="365d">a year</option>
      <option value="">never</option>
    </select></label></p>
  <p><label>Description<br><input type="text" name="description" maxlength="200" size="60"></label></p>
  <p><button type="submit">Create token</button></p>
</form>
