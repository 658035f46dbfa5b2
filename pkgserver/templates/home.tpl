% rebase('layout', L=L)
<section class="intro">
  <h1>Python packages of this site</h1>
  <p>A private Python package index: install from it with pip, uv or poetry, publish to it with twine, uv, poetry, pdm, hatch or flit.
  % if counts is not None:
  It holds <strong id="count-projects">{{counts[0]}}</strong> projects in <strong id="count-files">{{counts[1]}}</strong> files.
  % end
  % if fallback:
  Projects that are not hosted here are fetched from <code>{{fallback}}</code>.
  % else:
  Projects that are not hosted here are not found: add the public index yourself (<code>--extra-index-url</code>) if you need it.
  % end
  </p>
  <form class="search big" action="{{L['root']}}-/projects/" method="get" role="search">
    <input type="search" name="q" placeholder="Search by name or summary" aria-label="Search projects" maxlength="200">
    <button type="submit">Search</button>
  </form>
</section>

% if recent is not None:
<section>
  <h2>Recently uploaded</h2>
  % if recent:
  <ul class="recent">
    % for r in recent:
    <li><a href="{{L['root']}}project/{{r.project.name}}/{{q(r.version)}}/">{{r.project.display_name}} {{r.version}}</a>
      <time datetime="{{iso(r.time)}}">{{when(r.time)}}</time>
      % if r.project.yank_of(r.version) is not None:
      <span class="badge yanked">yanked</span>
      % end
      % if r.project.summary:
      <span class="summary">{{r.project.summary}}</span>
      % end
    </li>
    % end
  </ul>
  <p><a href="{{L['root']}}-/projects/">Browse all {{counts[0]}} projects</a></p>
  % else:
  <p>Nothing yet: upload a package (see below) or copy one into the package directory.</p>
  % end
</section>
% else:
<section><p><a href="{{L['root']}}-/projects/">Sign in to browse the projects</a>.</p></section>
% end

<section class="config">
  <h2>Install</h2>
  <h3>pip</h3>
  % include('snippet', id='pip-index', text='pip install --index-url ' + url + 'simple/ PROJECT')
  % include('snippet', id='pip-extra', text='pip install --extra-index-url ' + url + 'simple/ PROJECT')
  <p>or for every pip command, in <code>pip.conf</code> (<code>~/.config/pip/pip.conf</code>, <code>/etc/pip.conf</code>):</p>
  % include('snippet', id='pip-conf', text='[global]\nindex-url = ' + url + 'simple/')
  <h3>uv</h3>
  % include('snippet', id='uv-pip', text='uv pip install --index-url ' + url + 'simple/ PROJECT')
  <p>or in <code>pyproject.toml</code>:</p>
  % include('snippet', id='uv-toml', text='[[tool.uv.index]]\nname = "corp"\nurl = "' + url + 'simple/"')
  <h3>poetry</h3>
  % include('snippet', id='poetry-source', text='poetry source add --priority=primary corp ' + url + 'simple/')

  <h2>Publish</h2>
  <h3>twine</h3>
  <p>In <code>~/.pypirc</code>, then <code>twine upload -r corp dist/*</code>:</p>
  % include('snippet', id='pypirc', text='[distutils]\nindex-servers =\n    corp\n\n[corp]\nrepository = ' + url + '\nusername = YOUR-USER\npassword = YOUR-PASSWORD')
  <h3>uv, poetry</h3>
  % include('snippet', id='uv-publish', text='uv publish --publish-url ' + url + ' dist/*')
  % include('snippet', id='poetry-publish', text='poetry config repositories.corp ' + url + '\npoetry publish -r corp')
</section>
