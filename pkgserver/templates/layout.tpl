<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="pypi:repository-version" content="1.4">
<title>{{L['title']}} · pkgserver</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{{L['root']}}-/static/style.css?v={{L['asset']}}">
<script src="{{L['root']}}-/static/copy.js?v={{L['asset']}}" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="{{L['root']}}">pkgserver</a>
  <form class="search" action="{{L['root']}}-/projects/" method="get" role="search">
    <input type="search" name="q" value="{{L.get('query', '')}}" placeholder="Search projects" aria-label="Search projects" maxlength="200">
    <button type="submit">Search</button>
  </form>
  <nav><a href="{{L['root']}}-/projects/">Projects</a><a href="{{L['root']}}simple/">Simple index</a></nav>
</header>
<main>
{{!base}}
</main>
<footer>pkgserver {{L['version']}} · <a href="{{L['root']}}simple/">/simple/</a> · <a href="{{L['root']}}-/projects/">all projects</a></footer>
</body>
</html>
