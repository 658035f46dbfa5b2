% rebase('layout', L=L)
<div class="project-head">
  <h1>{{page.name}} <span class="badge cached">cached</span></h1>
  <p class="banner cached" id="cached-from">Not hosted here: cached from <code>{{upstream}}</code>. Its files are fetched from there on first download, verified against the upstream's sha256 and kept. It cannot be uploaded here while it is cached.</p>
  % if page.files:
  <div class="install">
    % include('snippet', id='install-cmd', text=install)
  </div>
  % end
</div>
<h2>Files ({{len(page.files)}}; {{kept}} in the cache)</h2>
% if page.files:
<table class="files">
  <thead><tr><th>File</th><th>Version</th><th>Size</th><th>Cached</th></tr></thead>
  <tbody>
  % for f in shown:
  <tr>
    <td><a href="{{L['root']}}proxy/{{q(page.name)}}/{{q(f.filename)}}">{{f.filename}}</a>
    % if f.yanked is not None:
    <span class="badge yanked">yanked</span>
    % end
    </td>
    <td>{{f.version}}</td>
    <td>{{size(f.size) if f.size is not None else '?'}}</td>
    <td>{{'yes' if f.filename in cached else 'no'}}</td>
  </tr>
  % end
  </tbody>
</table>
% if len(page.files) > len(shown):
<p>… and {{len(page.files) - len(shown)}} older files.</p>
% end
% else:
<p>The upstream lists no file of this project that can be verified.</p>
% end
