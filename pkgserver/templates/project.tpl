% rebase('layout', L=L)
<div class="project-head">
  <h1>{{project.display_name}} <span class="version">{{version}}</span></h1>
  % marker = project.status
  % if marker is not None:
  % why = ': ' + marker.reason if marker.reason else ''
  <p class="banner status {{marker.status}}" id="project-status">
  % if marker.status == 'quarantined':
  This project is <strong>quarantined</strong>{{why}}. None of its files is offered for download, and it takes no uploads.
  % elif marker.status == 'archived':
  This project is <strong>archived</strong>{{why}}. It takes no new uploads; its files stay available.
  % else:
  This project is <strong>{{marker.status}}</strong>{{why}}.
  % end
  </p>
  % end
  % if yank is not None:
  <p class="banner yanked">This release is yanked{{': ' + yank if yank else ''}}. Installers skip it unless it is pinned with <code>==</code>.</p>
  % elif version != project.current:
  <p class="banner">This is not the latest release: <a href="{{L['root']}}project/{{project.name}}/{{q(project.current)}}/">{{project.current}}</a> is.</p>
  % end
  % if details and details.summary:
  <p class="summary">{{details.summary}}</p>
  % end
  % if install:
  <div class="install">
    % include('snippet', id='install-cmd', text=install)
  </div>
  % end
</div>
<div class="project">
<aside>
  <h2>About</h2>
  <dl>
    <dt>Requires Python</dt><dd>{{(details.requires_python if details else None) or 'any'}}</dd>
    % if details and details.author:
    <dt>Author</dt><dd>{{details.author}}</dd>
    % end
    % if details and details.license:
    <dt>License</dt><dd>{{details.license}}</dd>
    % end
  </dl>
  % if details and details.project_urls:
  <h2>Links</h2>
  <ul class="links">
    % for label, href in details.project_urls:
    <li>
      % if href.lower().startswith(('https://', 'http://')):
      <a href="{{href}}" rel="nofollow noopener">{{label}}</a>
      % else:
      {{label}}: {{href}}
      % end
    </li>
    % end
  </ul>
  % end
  <h2>Dependencies</h2>
  % if details and details.requires_dist:
  <ul class="deps">
    % for dep in details.requires_dist:
    <li><code>{{dep}}</code></li>
    % end
  </ul>
  % elif details:
  <p>None.</p>
  % else:
  <p>Unknown: no metadata could be read from the files.</p>
  % end
</aside>
<article class="description">
  <h2>Description</h2>
  % if description:
  <div class="readme">{{!description}}</div>
  % else:
  <p>No description.</p>
  % end
</article>
</div>
<section class="releases">
  <h2>Release history</h2>
  % for v in shown:
  % vyank = project.yank_of(v)
  <details class="release{{' yanked' if vyank is not None else ''}}" id="v{{v}}"{{!' open' if v == version else ''}}>
    <summary><a href="{{L['root']}}project/{{project.name}}/{{q(v)}}/">{{v}}</a>
      % if vyank is not None:
      <span class="badge yanked" title="{{vyank}}">yanked{{': ' + vyank if vyank else ''}}</span>
      % end
      % if v == project.current:
      <span class="badge">latest</span>
      % end
    </summary>
    <div class="table"><table>
      <thead><tr><th>File</th><th>Size</th><th>Uploaded</th>{{!'<th>By</th>' if uploader else ''}}<th>sha256</th></tr></thead>
      <tbody>
      % for f in (project.files_of(v) if project.offered else ()):
      <tr>
        <td><a href="{{L['root']}}packages/{{q(f.relpath)}}">{{f.filename}}</a>
        % if f.requires_python:
        <br><small>Python {{f.requires_python}}</small>
        % end
        <small class="hash narrow">sha256 {{f.sha256}}</small>
        </td>
        <td>{{size(f.size)}}</td>
        <td><time datetime="{{iso(f.upload_time)}}">{{when(f.upload_time)}}</time></td>
        % if uploader:
        <td>{{uploader(f) or '—'}}</td>
        % end
        <td><code class="hash">{{f.sha256}}</code></td>
      </tr>
      % end
      </tbody>
    </table></div>
  </details>
  % end
  % if older:
  <p>{{len(older)}} older releases:
  % for v in older:
    <a href="{{L['root']}}project/{{project.name}}/{{q(v)}}/">{{v}}</a>{{' (yanked)' if project.yank_of(v) is not None else ''}}
  % end
  </p>
  % end
</section>
