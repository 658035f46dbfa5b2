<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pkgserver</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }
pre { background: #f4f4f4; padding: .75rem; overflow-x: auto; }
code { font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>pkgserver {{VERSION}}</h1>
<p>This is a private Python package index.
% if NUMPKGS is not None:
It serves <strong>{{NUMPKGS}}</strong> projects in <strong>{{NUMFILES}}</strong> files.
% end
% if fallback:
Projects that are not hosted here are looked up on <code>{{fallback}}</code>.
% end
</p>
<h2>Install with pip or uv</h2>
<pre><code>pip install --index-url {{URL}}simple/ PACKAGE
uv pip install --index-url {{URL}}simple/ PACKAGE</code></pre>
<p>or, in <code>pip.conf</code>:</p>
<pre><code>[global]
index-url = {{URL}}simple/</code></pre>
<h2>Upload with twine</h2>
<p>In <code>~/.pypirc</code>:</p>
<pre><code>[distutils]
index-servers = corp

[corp]
repository = {{URL}}
username = USER
password = PASSWORD</code></pre>
<pre><code>twine upload -r corp dist/*</code></pre>
<p>Browse the <a href="simple/">simple index</a>.</p>
</body>
</html>
