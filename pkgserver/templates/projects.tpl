% rebase('layout', L=L)
<h1>
% if query:
{{total}} project{{'' if total == 1 else 's'}} matching “{{query}}”
% else:
All {{total}} projects
% end
</h1>
% if rows:
<ol class="projects" start="{{first + 1}}">
  % for p in rows:
  <li>
    <a class="name" href="{{L['root']}}project/{{p.name}}/">{{p.display_name}}</a>
    <span class="version">{{p.current}}</span>
    % if p.status is not None:
    <span class="badge status {{p.status.status}}">{{p.status.status}}</span>
    % end
    % if p.summary:
    <span class="summary">{{p.summary}}</span>
    % end
  </li>
  % end
</ol>
% elif query:
<p>No project matches. Names and summaries are searched, case-insensitively; <code>-</code>, <code>_</code> and <code>.</code> count as the same.</p>
% else:
<p>No projects yet.</p>
% end
% if cached:
<h2 id="cached">Cached from the upstream ({{len(cached)}})</h2>
<p>Not hosted here: served from <code>{{upstream}}</code> through the cache.</p>
<ol class="projects cached">
  % for name in cached[:500]:
  <li><a class="name" href="{{L['root']}}project/{{q(name)}}/">{{name}}</a> <span class="badge cached">cached</span></li>
  % end
</ol>
% end
% if pages > 1:
<nav class="pages" aria-label="Pages">
  % if page > 1:
  <a rel="prev" href="?{{link(page - 1)}}">← Previous</a>
  % end
  <span>Page {{page}} of {{pages}}</span>
  % if page < pages:
  <a rel="next" href="?{{link(page + 1)}}">Next →</a>
  % end
</nav>
% end
